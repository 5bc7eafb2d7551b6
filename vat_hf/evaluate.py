"""Evaluation entry point for one or many processes (``vat-hf eval`` runs the same parser).

    python -m vat_hf.evaluate --model M -o judgments.jsonl [--target-value V --k-shots K]
    accelerate launch -m vat_hf.evaluate --model M -o judgments.jsonl ...      # data-parallel

A thin script over three dataclasses, parsed by ``transformers.HfArgumentParser`` as TRL's
scripts are: :class:`EvalArguments` (what is evaluated: model, adapter, prompt intervention,
output), :class:`~vat_hf.evaluation.config.DataConfig` (which items) and
:class:`~vat_hf.evaluation.config.EvalConfig` (every evaluator setting, the same dataclass as an
experiment recipe's ``eval:`` section). The evaluation itself is
:func:`vat_hf.evaluation.run_evaluation`, the function every stage of ``vat-hf run`` goes
through too.

Under ``accelerate launch`` every process judges its share of the items on its own device; the
records are gathered in the items' original order and the main process writes them, so the
files equal those of a single-process run. A killed run restarted with the same command reads
finished judgments from the cache (``--cache_dir``, default ``$VAT_HF_CACHE``) and judges only
the rest. Files written: see :mod:`vat_hf.evaluation.results`.

(This module is ``vat_hf.evaluate``; ``import evaluate`` elsewhere still finds the Hugging Face
``evaluate`` package, since vat-hf uses absolute imports only.)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from typing import Annotated, Any, Dict, List, Optional, Sequence

from annotated_types import Ge

from vat_hf.errors import VatHfError
from vat_hf.evaluation.config import DataConfig, EvalConfig
from vat_hf.validation import check_fields


@dataclass
class EvalArguments:
    """What one evaluation judges with and where its judgments go (the items are a
    :class:`DataConfig`, the settings an :class:`EvalConfig`)."""

    _argument_group_name = "what is evaluated (EvalArguments)"  # HfArgumentParser: the --help section

    output: str = field(metadata={"help": "JSONL file of per-item judgments (written by the main process).",
                                  "aliases": ["-o"]})
    model: Optional[str] = field(
        default=None, metadata={"help": "Hub id or local folder; default: the embedded SmolLM2-135M-Instruct."})
    adapter: Optional[str] = field(
        default=None, metadata={"help": "PEFT adapter folder or Hub id, loaded on the model without merging."})
    target_value: Optional[str] = field(
        default=None, metadata={"help": "Apply the prompt intervention toward this basic value."})
    k_shots: Annotated[int, Ge(0)] = field(
        default=0, metadata={"help": "Few-shot demonstrations (from train scenes) for the prompt intervention."})
    system_prompt: bool = field(
        default=True, metadata={"help": "Use the value system prompt with --target_value."})
    name: Optional[str] = field(
        default=None, metadata={"help": "Run name in the log file names (default: the output file's stem)."})
    seed: Annotated[int, Ge(0)] = field(default=0, metadata={"help": "Seed of the scene sample and the demonstrations."})

    def __post_init__(self):
        check_fields(self)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser(prog: str = "python -m vat_hf.evaluate"):
    """``HfArgumentParser`` over (EvalArguments, DataConfig, EvalConfig), plus ``-v``."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((EvalArguments, DataConfig, EvalConfig), prog=prog, description=__doc__,
                              formatter_class=_HelpFormatter, allow_abbrev=False)
    parser.add_argument("-v", "--verbose", action="store_true", help="Log progress details.")
    return parser


def parse_args(argv: Optional[Sequence[str]] = None, prog: str = "python -m vat_hf.evaluate"):
    """(EvalArguments, DataConfig, EvalConfig, verbose) from command-line arguments."""
    parser = build_parser(prog)
    try:
        args, data, config, rest = parser.parse_args_into_dataclasses(
            list(sys.argv[1:] if argv is None else argv), look_for_args_file=False)
    except VatHfError as err:
        parser.error(str(err))
    return args, data, config, rest.verbose


def evaluate(args: EvalArguments, data: DataConfig, config: EvalConfig, accelerator=None) -> Dict[str, Any]:
    """Load the items, build the prompt, and run the evaluation."""
    from vat_hf.evaluation.run import check_adapter, run_evaluation
    from vat_hf.prompts import JudgePrompt

    check_adapter(args.adapter)  # before anything is loaded
    items = data.load(seed=args.seed)
    prompt = JudgePrompt()
    if args.target_value:
        from vat_hf.interventions import value_prompt

        train = data.load_train(seed=args.seed) if args.k_shots else []
        prompt = value_prompt(args.target_value, train, k_shots=args.k_shots, system_prompt=args.system_prompt,
                              seed=args.seed)
    return run_evaluation(config, items=items, prompt=prompt, output=args.output, model=args.model,
                          adapter=args.adapter, name=args.name, seed=args.seed, data_config=data.to_dict(),
                          run_config={"arguments": dataclasses.asdict(args), "data": data.to_dict()},
                          accelerator=accelerator)


def summary_line(results: Dict[str, Any]) -> str:
    s, stats = results["summary"], results["stats"]
    missing = f", {s['n_missing']} missing" if s["n_missing"] else ""
    return (f"{s['n_items']} judgments -> {results['files']['judgments']}  (mean rating {s['mean_rating']:.3f}, "
            f"option mass mean {s['option_mass_mean']:.3f}, min {s['option_mass_min']:.3f}{missing}; "
            f"mode {results['mode']}; {stats['n_cached']} from cache, {stats['n_computed']} judged)\n"
            f"results -> {results['files']['results']}")


def main(argv: Optional[List[str]] = None, prog: str = "python -m vat_hf.evaluate") -> int:
    """Parse, evaluate, print the summary; the exit status. A user error is printed as
    ``error: <message>`` and gives 1 (the traceback with ``-v``; :func:`vat_hf.errors.run_main`)."""
    from vat_hf.errors import run_main
    from vat_hf.redaction import install_log_redaction

    args, data, config, verbose = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    return run_main(lambda: _evaluate_and_print(args, data, config), verbose)


def _evaluate_and_print(args: EvalArguments, data: DataConfig, config: EvalConfig) -> int:
    from vat_hf.evaluation.run import distributed_state

    accelerator, _, _ = distributed_state()
    try:
        results = evaluate(args, data, config, accelerator=accelerator)
        if results:
            print(summary_line(results))
    finally:
        if accelerator is not None:
            from vat_hf.distributed import end_distributed

            end_distributed(accelerator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
