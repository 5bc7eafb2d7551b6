"""The ``vat-hf`` command line (typer).

    vat-hf values                          the taxonomy
    vat-hf eval  --model M [--adapter A] [--target-value V --k-shots K] [--log-samples] -o judgments.jsonl
    vat-hf score PRE.jsonl POST.jsonl --target-value V -o vat.json
    vat-hf run   recipes/demo/smollm2_benevolence.yaml
    vat-hf report RESULT.json [...] -o DIR
    vat-hf data  ...                       import, load, build, check and push item sets
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Measure the Value Alignment Tax of aligning a language model.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()


def _print_text(text: str) -> None:
    """Print Markdown tables as they are: no wrapping (it breaks table rows), no rich markup
    (a confidence interval "[0.1, 0.2]" is not a style tag)."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def _add_subcommands() -> None:
    try:
        from vat_hf.data.cli import app as data_app
    except ImportError:  # the data command group is optional while it is being built
        return
    app.add_typer(data_app, name="data", help="Import, load, build, check and push scenario–action item sets.")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def values():
    """List the ten basic Schwartz values in circumplex order."""
    from vat_hf import values as taxonomy

    table = Table("value", "angle", "higher-order group", "definition", "survey items")
    for name in taxonomy.BASIC_VALUES:
        v = taxonomy.VALUES[name]
        table.add_row(name, f"{v.angle_deg:.0f}°", v.higher_order, v.definition, str(len(taxonomy.micro_values_of(name))))
    console.print(table)


@app.command("eval")
def eval_(
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file of per-item judgments."),
    model: Optional[str] = typer.Option(None, help="Hub id or local folder; default: the embedded SmolLM2-135M-Instruct."),
    adapter: Optional[str] = typer.Option(None, help="PEFT adapter folder or Hub id, loaded without merging."),
    data: str = typer.Option("builtin", help="Item source: 'builtin', a file/folder in the item schema, or a Hub id."),
    split: Optional[str] = typer.Option("test", help="Split to judge ('train', 'test'; '' for all)."),
    max_scenes: Optional[int] = typer.Option(None, help="Judge a reproducible sample of this many scenes."),
    target_value: Optional[str] = typer.Option(None, help="Apply a prompt intervention toward this value."),
    k_shots: int = typer.Option(0, help="Few-shot demonstrations (from train scenes) for the prompt intervention."),
    system_prompt: bool = typer.Option(True, help="Use the value system prompt with --target-value."),
    dtype: str = typer.Option("auto", help="auto, float32, bfloat16 or float16."),
    max_batch_tokens: int = typer.Option(8192, help="Token budget of one batch (padded length x rows)."),
    max_batch_size: int = typer.Option(64, help="Most rows in one batch."),
    mode: str = typer.Option("auto", help="auto, logprob, logprob-multitoken or generate."),
    prefix_reuse: str = typer.Option("auto", help="Reuse the shared prompt prefix's key/value cache: auto, true, false."),
    max_length: Optional[int] = typer.Option(None, help="Longest prompt judged (default: the model's context)."),
    truncation: str = typer.Option("refuse", help="Over-long prompts: refuse (recorded as missing) or left (keep the last tokens)."),
    cache_dir: Optional[Path] = typer.Option(None, help="Judgment cache root (default $VAT_HF_CACHE); a rerun resumes."),
    cache: bool = typer.Option(True, help="Read and write the judgment cache."),
    log_samples: bool = typer.Option(False, "--log-samples", help="Also write samples_<name>.jsonl beside the output."),
    backend: str = typer.Option("hf", help="hf (transformers) or vllm (optional extra)."),
    seed: int = typer.Option(0),
):
    """Judge items with a model (optionally an adapter and a prompt intervention).

    Writes the judgments, results_<name>.json (config, versions, seed, summary) beside them and,
    with --log-samples, samples_<name>.jsonl. For several GPUs: accelerate launch -m vat_hf.evaluate.
    """
    from vat_hf.evaluation.run import EvalRunConfig, run_evaluation

    config = EvalRunConfig(
        output=str(output), model=model, adapter=adapter, data=data, split=split, max_scenes=max_scenes,
        target_value=target_value, k_shots=k_shots, system_prompt=system_prompt, dtype=dtype,
        max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size, mode=mode, prefix_reuse=prefix_reuse,
        max_length=max_length, truncation=truncation, cache_dir=str(cache_dir) if cache_dir else None, use_cache=cache,
        log_samples=log_samples, backend=backend, seed=seed,
    )
    results = run_evaluation(config)
    s = results["summary"]
    missing = f", {s['n_missing']} missing" if s["n_missing"] else ""
    console.print(f"{s['n_items']} judgments -> {output}  (mean rating {s['mean_rating']:.3f}, option mass mean "
                  f"{s['option_mass_mean']:.3f}, min {s['option_mass_min']:.3f}{missing}; mode {results['mode']}; "
                  f"{results['stats']['n_cached']} from cache)")
    console.print(f"results -> {results['files']['results']}")


@app.command()
def score(
    pre: Path = typer.Argument(..., help="JSONL judgments before the intervention."),
    post: Path = typer.Argument(..., help="JSONL judgments after it."),
    target_value: str = typer.Option(..., help="The value the intervention aimed at."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the VAT result JSON here."),
    n_bootstrap: int = typer.Option(1000, help="Scene-bootstrap resamples for confidence intervals (0: none)."),
    level: str = typer.Option("basic", help="basic, higher_order or micro."),
    seed: int = typer.Option(0),
):
    """Score two judgment files with the VAT metric."""
    from vat_hf.io import read_jsonl, write_json
    from vat_hf.metrics.paired import score_judgments
    from vat_hf.report import markdown_table

    result = score_judgments(read_jsonl(pre), read_jsonl(post), target_value, n_bootstrap=n_bootstrap, level=level, seed=seed)
    _print_text(markdown_table({"name": post.stem, "target_value": result["target_value"], "vat": result}))
    if output:
        write_json(output, result)
        console.print(f"VAT result -> {output}")


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Experiment recipe YAML (see recipes/demo/)."),
    output_dir: Optional[str] = typer.Option(None, help="Override the recipe's output_dir."),
    max_scenes: Optional[int] = typer.Option(None, help="Override data.max_scenes (a quick run)."),
):
    """Run an experiment recipe: baseline, interventions, their evaluations, the metric, a report."""
    from vat_hf.metrics.compare import compare_interventions, comparison_markdown, name_of, paired_markdown
    from vat_hf.pipeline import run_experiment
    from vat_hf.report import markdown_table

    outcome = run_experiment(recipe, output_dir=output_dir, max_scenes=max_scenes)
    for i, result in enumerate(outcome["results"]):
        console.rule(f"{name_of(result, i)} against the baseline")
        _print_text(markdown_table(result))
    if len(outcome["results"]) > 1:
        console.rule("interventions compared")
        comparison = outcome.get("comparison")
        _print_text(comparison_markdown(compare_interventions(outcome["results"], comparison)))
        if comparison and comparison.get("pairs"):
            _print_text(f"\npaired differences (a - b), {comparison['method']}:\n")
            _print_text(paired_markdown(comparison))
    for kind, path in outcome["report"].items():
        console.print(f"report {kind}: {path}")


@app.command()
def report(
    results: List[Path] = typer.Argument(..., help="Result JSON files written by `vat-hf run`."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Folder for report.md, report.html and figures."),
    title: Optional[str] = typer.Option(None),
):
    """Render the report (Markdown, HTML, figures) from result JSON files."""
    from vat_hf.report import report_command

    report_command(results, output_dir, title)


_add_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
