"""The ``vat-hf`` command line (typer).

    vat-hf values                          the taxonomy
    vat-hf eval  --model M [--adapter A] [--target-value V --k-shots K] -o judgments.jsonl   (= python -m vat_hf.evaluate)
    vat-hf score PRE.jsonl POST.jsonl --target-value V -o vat.json
    vat-hf run   recipes/demo/smollm2_benevolence.yaml
    vat-hf run   recipes/grid/smollm2_prompt_steering.yaml [--only target=Power]   (a sweep: the grid report)
    vat-hf report RESULT.json [...] -o DIR
    vat-hf grid-push OUTPUT_DIR org/name [--dry-run DIR]   a sweep's results as a Hub dataset
    vat-hf data  ...                       import, load, build, check and push item sets

Every command shares one error surface (:func:`vat_hf.errors.run_main`'s rules): a user error
(any ``VatHfError``: a bad recipe key, a bad item row, unpaired judgments, a folder in use ...,
or a path that cannot be read or written) prints ``error: <message>`` with its fix and exits
with status 1; ``vat-hf -v COMMAND`` shows the traceback too. Log lines and messages pass through
the one redaction (:mod:`vat_hf.redaction`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from vat_hf.errors import is_user_error, report_error


class ErrorSurfaceGroup(TyperGroup):
    """The ``vat-hf`` command group: a user error of any subcommand (``data ...`` included) is
    printed by :func:`vat_hf.errors.report_error` (``error: <message>``, the traceback first with
    ``-v``) and ends the command with status 1, under ``vat-hf`` and typer's test runner alike."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as err:  # noqa: BLE001 - a bug keeps its traceback (re-raised below)
            if not is_user_error(err):
                raise
            raise typer.Exit(code=report_error(err, verbose=bool(ctx.params.get("verbose")))) from None


app = typer.Typer(help="Measure the Value Alignment Tax of aligning a language model.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=ErrorSurfaceGroup)
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
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details; show an error's traceback.")):
    from vat_hf.redaction import install_log_redaction

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()


@app.command()
def values():
    """List the ten basic Schwartz values in circumplex order."""
    from vat_hf import values as taxonomy

    table = Table("value", "angle", "higher-order group", "definition", "survey items")
    for name in taxonomy.BASIC_VALUES:
        v = taxonomy.VALUES[name]
        table.add_row(name, f"{v.angle_deg:.0f}°", v.higher_order, v.definition, str(len(taxonomy.micro_values_of(name))))
    console.print(table)


@app.command("eval", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def eval_(ctx: typer.Context):
    """Judge items with a model (optionally an adapter and a prompt intervention); flags: vat-hf eval --help.

    Takes exactly the arguments of `python -m vat_hf.evaluate` (one parser, generated from the
    EvalArguments, DataConfig and EvalConfig dataclasses). Writes the judgments, results_<name>.json
    and samples_<name>.jsonl beside them. For several GPUs: accelerate launch -m vat_hf.evaluate.
    """
    from vat_hf.evaluate import main as evaluate_main

    status = evaluate_main(list(ctx.args), prog="vat-hf eval")
    if status:
        raise typer.Exit(code=status)


@app.command()
def score(
    pre: Path = typer.Argument(..., help="JSONL judgments before the intervention."),
    post: Path = typer.Argument(..., help="JSONL judgments after it."),
    target_value: str = typer.Option(..., help="The value the intervention aimed at."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the VAT result JSON here."),
    n_bootstrap: int = typer.Option(1000, help="Scene-bootstrap resamples for confidence intervals (0: none)."),
    level: str = typer.Option("basic", help="basic, higher_order or micro."),
    seed: int = typer.Option(0),
    scale_min: float = typer.Option(1.0, "--scale-min", help="Lowest rating of the scale the items were rated on."),
    scale_max: float = typer.Option(5.0, "--scale-max", help="Highest rating of that scale."),
):
    """Score two judgment files with the VAT metric (items paired by id; every item left out is counted and shown)."""
    from vat_hf.io import read_jsonl, write_json
    from vat_hf.metrics.paired import score_judgments
    from vat_hf.report import markdown_table

    result = score_judgments(read_jsonl(pre), read_jsonl(post), target_value, n_bootstrap=n_bootstrap, level=level,
                             seed=seed, scale_min=scale_min, scale_max=scale_max, pre_name=str(pre), post_name=str(post))
    # What pairing left out (unpaired items, items without a rating) is logged as a warning.
    _print_text(markdown_table({"name": post.stem, "target_value": result["target_value"], "vat": result}))
    if output:
        write_json(output, result)
        console.print(f"VAT result -> {output}")


def _run_sweep(config, only: List[str], output_dir: Optional[str], max_scenes: Optional[int]) -> None:
    from vat_hf.sweep import run_sweep

    summary = run_sweep(config, only=only, output_dir=output_dir, max_scenes=max_scenes)
    table = Table("cell", "status", "time", "gain", "tax", title=f"{summary['name']}: {summary['n_cells']} cells")
    for row in summary["cells"]:
        if row["cell"] not in summary["run"]["cells_run"]:
            continue
        secs = row.get("seconds")
        gain = "" if row.get("gain") is None else f"{row['gain']:+.3f} ({row.get('gain_status')})"
        tax = "" if row.get("tax") is None else f"{row['tax']:.3f}"
        table.add_row(row["cell"], row["status"] + (" (reused)" if row["cell"] in summary["run"]["skipped"] else ""),
                      f"{secs:.0f} s" if secs else "", gain, tax)
    console.print(table)
    console.print(f"grid report: {Path(summary['output_dir']) / 'grid' / 'index.html'}")
    failed = summary["run"]["failed"]
    if failed:
        console.print(f"{len(failed)} cell(s) failed (their errors are in cells/<id>/status.json): {', '.join(failed)}")
        raise typer.Exit(1)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Experiment or sweep recipe YAML (see recipes/demo/, recipes/grid/)."),
    output_dir: Optional[str] = typer.Option(None, help="Override the recipe's output_dir."),
    max_scenes: Optional[int] = typer.Option(None, help="Override data.max_scenes (a quick run)."),
    only: List[str] = typer.Option([], "--only", help="Sweeps: run only the cells matching key=value[,key=value] "
                                                    "(keys model, target, intervention); repeat for several."),
):
    """Run a recipe: baseline, interventions, their evaluations, the metric, a report; a sweep
    recipe (models x target_values x interventions) runs every cell and writes the grid report."""
    from vat_hf.metrics.compare import compare_interventions, comparison_markdown, name_of, paired_markdown
    from vat_hf.pipeline import run_experiment
    from vat_hf.report import markdown_table
    from vat_hf.pipeline import load_recipe
    from vat_hf.sweep import is_sweep

    raw, _ = load_recipe(recipe)
    if isinstance(raw, dict) and is_sweep(raw):
        return _run_sweep(recipe, only, output_dir, max_scenes)
    if only:
        raise typer.BadParameter("--only selects cells of a sweep recipe; this recipe is one experiment")
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
    for flagged in outcome.get("flagged") or []:
        console.print(f"{flagged['name']}: {flagged['flag']['words']}", markup=False)
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


@app.command("grid-push")
def grid_push(
    output_dir: Path = typer.Argument(..., help="A sweep's output_dir (with grid/summary.json)."),
    repo_id: str = typer.Argument(..., help="Hub dataset repository, 'org/name'."),
    dry_run: Optional[Path] = typer.Option(None, "--dry-run", help="Write the files into this folder instead."),
    private: Optional[bool] = typer.Option(None, help="Create the repository private."),
    license: str = typer.Option("apache-2.0", help="The results' licence (the card's metadata)."),
):
    """Push a sweep's grid summary (results, not items) to the Hub as a dataset with a card."""
    from vat_hf.report.hub import push_grid_summary

    result = push_grid_summary(output_dir, repo_id, license=license, private=private, dry_run_dir=dry_run)
    where = dry_run if dry_run is not None else result.url
    console.print(f"{len(result.files)} files ({', '.join(sorted(result.files))}) -> {where}", markup=False)


_add_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
