"""``vat-hf data``: import, load, build, check and push scenario–action item sets.

    vat-hf data import-value-action-lens ../shared/data/value-action-lens/value_action_gap_full_data_generation.csv
    vat-hf data load Tinyhope/Value_Alignment_Tax --mapping recipes/data/tinyhope_value_alignment_tax.yaml -o items.jsonl
    vat-hf data load their.csv --map domain=topic --map action="Human Action" --scenario-template "..." -o items.jsonl
    vat-hf data build --generator Qwen/Qwen2.5-7B-Instruct --countries "India,Kenya" -o outputs/data/build-1
    vat-hf data check outputs/data/value-action-lens
    vat-hf data push outputs/data/value-action-lens me/value-action-lens-items [--dry-run DIR]

Every command writes or reads the one item schema (``vat_hf.data.schema``) through the one storage
module (``vat_hf.data.storage``: the sources ``vat-hf eval``, ``vat-hf run`` and training accept).
Item sets are saved as a ``save_to_disk`` folder, or ``.jsonl``/``.parquet``/``.csv`` by the
output's suffix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from vat_hf.data.fields import DEFAULT_TRAIN_FRACTION

app = typer.Typer(help="Import, load, build, check and push scenario–action item sets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()


def _fail(err: Exception) -> None:
    """Hand an error to vat-hf's one error surface (``error: <message>``, exit 1; see
    :mod:`vat_hf.cli`): vat-hf's own errors as they are, a library's ValueError as one."""
    from vat_hf.errors import VatHfError

    if isinstance(err, (VatHfError, OSError)):
        raise err
    raise VatHfError(str(err)) from err


def _split_list(text: Optional[str]) -> Optional[List[str]]:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _mapping(mapping: Optional[Path], maps: Optional[List[str]], **options: Any):
    from vat_hf.data.mapping import ColumnMapping, parse_map_flags

    base = ColumnMapping.from_yaml(mapping).to_dict() if mapping else ColumnMapping().to_dict()
    base["columns"] = {**base["columns"], **parse_map_flags(maps or [])}
    for key, value in options.items():
        if value is None or value == [] or value == {}:
            continue
        if key == "polarity_values":
            extra = {}
            for flag in value:
                if "=" not in flag:
                    raise ValueError(f"--polarity-value {flag!r}: write SPELLING=+1 or SPELLING=-1")
                k, v = flag.split("=", 1)
                extra[k.strip()] = int(v)
            value = {**base["polarity_values"], **extra}
        base[key] = value
    return ColumnMapping.from_dict(base)


def _print_failures(failures: List[Dict[str, Any]], where: Optional[Path], limit: int = 10, key: str = "row") -> None:
    if not failures:
        return
    table = Table(key, "reason", title=f"{len(failures)} rows not recovered" + (f" (all in {where})" if where else ""))
    for f in failures[:limit]:
        where = f.get(key)
        if key == "row" and isinstance(where, int):
            where = where + 1  # rows are shown counted from 1 (as in every message), stored as 0-based indices
        table.add_row(str(where), str(f.get("reason") or f.get("problem")))
    if len(failures) > limit:
        table.add_row("...", f"{len(failures) - limit} more")
    console.print(table)


@app.command("import-value-action-lens")
def import_value_action_lens_cmd(
    source: str = typer.Argument(..., help="The corpus CSV (or its released .zip, or a folder holding it), or a URL of either."),
    output: Path = typer.Option(Path("outputs/data/value-action-lens"), "--output", "-o",
                                help="Where to save the items: a folder (save_to_disk), or .jsonl/.parquet/.csv."),
    seed: int = typer.Option(0, help="Seed of the per-scene split assignment."),
    train_fraction: float = typer.Option(DEFAULT_TRAIN_FRACTION, help="Fraction of scenes in the train split."),
):
    """Import the ValueActionLens corpus (country x topic scenes, 56 survey items, +/-1) into the item schema."""
    from vat_hf.data.lens import import_value_action_lens
    from vat_hf.data.storage import failures_path, save_items

    try:
        result = import_value_action_lens(source, seed=seed, train_fraction=train_fraction)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    path = save_items(result.dataset, output, metadata=result.metadata, failures=result.failures)
    ds = result.dataset
    n_train = sum(1 for s in ds["split"] if s == "train")
    scenes = len(set(ds["scene_id"]))
    console.print(f"recovered {result.n_recovered} of {result.n_rows} rows in {result.seconds:.1f} s "
                  f"(parser: {', '.join(f'{k} {v}' for k, v in sorted(result.methods.items()))}); "
                  f"{scenes} scenes; train {n_train} items, test {len(ds) - n_train} items -> {path}")
    _print_failures(result.failures, failures_path(path))


@app.command("load")
def load_cmd(
    source: Optional[str] = typer.Argument(None, help="Hub dataset id, file (CSV/JSON/JSONL/Parquet) or save_to_disk folder; "
                                                      "default: the mapping's 'source'."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to save the items: folder, or .jsonl/.parquet/.csv."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", "-m", help="Column-mapping YAML (see recipes/data/)."),
    maps: Optional[List[str]] = typer.Option(None, "--map", help="FIELD=COLUMN (repeatable), e.g. --map domain=topic."),
    config: Optional[str] = typer.Option(None, help="Hub config name."),
    source_split: Optional[str] = typer.Option(None, help="Read only this split of the source (default: all)."),
    value_kind: Optional[str] = typer.Option(None, help="What the value column holds: auto, basic or micro."),
    scenario_template: Optional[str] = typer.Option(None, help="Scenario text when there is no scenario column, "
                                                               "e.g. 'I live in {the_country}, ... {domain_lower}.'"),
    action_field: Optional[str] = typer.Option(None, help="The action column holds JSON answers; take this key."),
    polarity_values: Optional[List[str]] = typer.Option(None, "--polarity-value", help="Extra spelling, e.g. agree=+1."),
    seed: Optional[int] = typer.Option(None, help="Seed of the per-scene split assignment."),
    train_fraction: Optional[float] = typer.Option(None, help="Fraction of scenes in train (when there is no split column)."),
    on_error: Optional[str] = typer.Option(None, help="raise (default) or skip: skipped rows are listed."),
):
    """Load any dataset (Hub or disk) with other column names into the item schema and save it."""
    from vat_hf.data.mapping import load_mapped
    from vat_hf.data.storage import save_items

    try:
        cmap = _mapping(mapping, maps, config=config, source_split=source_split, value_kind=value_kind,
                        scenario_template=scenario_template, action_field=action_field, polarity_values=polarity_values,
                        seed=seed, train_fraction=train_fraction, on_error=on_error)
        items, failures = load_mapped(source, cmap, return_failures=True)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    path = save_items(items, output, failures=failures if failures else None)
    console.print(f"{len(items)} items in {len(set(items['scene_id']))} scenes -> {path}")
    _print_failures(failures, None)


@app.command("build")
def build_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Build directory (resumable: re-run to continue)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Build settings YAML (keys of BuildConfig)."),
    generator: Optional[str] = typer.Option(None, help="Generator chat model (Hub id or folder); default: embedded SmolLM2."),
    countries: Optional[str] = typer.Option(None, help="Comma-separated countries (default: the 12 of the paper)."),
    domains: Optional[str] = typer.Option(None, help="Comma-separated domains (default: the 11 of the paper)."),
    values: Optional[str] = typer.Option(None, help="Comma-separated basic values or survey items (default: the ten basic values)."),
    scenarios_per_pair: Optional[int] = typer.Option(None, help="Scenarios per country x domain."),
    scenarios: Optional[Path] = typer.Option(None, help="JSONL of your own scenarios (country, domain, scenario): skips stage 1."),
    seed: Optional[int] = typer.Option(None),
    temperature: Optional[float] = typer.Option(None),
    top_p: Optional[float] = typer.Option(None),
    max_new_tokens_scenarios: Optional[int] = typer.Option(None),
    max_new_tokens_actions: Optional[int] = typer.Option(None),
    max_retries: Optional[int] = typer.Option(None, help="Extra attempts for a bad generation."),
    batch_size: Optional[int] = typer.Option(None, help="Prompts per generate call."),
    dtype: Optional[str] = typer.Option(None, help="auto, float32, bfloat16 or float16."),
    device: Optional[str] = typer.Option(None),
):
    """Build a new item set in two stages with a generator model (scenarios, then actions)."""
    from vat_hf.data.generate import BuildConfig, build_items
    from vat_hf.data.storage import failures_path
    from vat_hf.io import read_jsonl

    given = read_jsonl(scenarios) if scenarios else None
    overrides = {"generator": generator, "countries": _split_list(countries), "domains": _split_list(domains),
                 "values": _split_list(values), "scenarios_per_pair": scenarios_per_pair, "seed": seed,
                 "temperature": temperature, "top_p": top_p, "max_new_tokens_scenarios": max_new_tokens_scenarios,
                 "max_new_tokens_actions": max_new_tokens_actions, "max_retries": max_retries, "batch_size": batch_size,
                 "dtype": dtype, "device": device}
    try:
        cfg = BuildConfig.from_yaml(config) if config else BuildConfig()
        cfg = BuildConfig.from_dict({**cfg.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
        result = build_items(cfg, output, scenarios=given)
    except ValueError as err:
        _fail(err)
    stats = result.metadata["stats"]
    console.print(f"{stats['items']} items in {stats['scenes_kept']} of {stats['scenes']} scenes -> {result.items_path}; "
                  f"{stats['rejected_generations']} generations rejected, {stats['gave_up']} gave up "
                  f"(all in {failures_path(result.items_path)})")


@app.command("check")
def check_cmd(
    source: str = typer.Argument(..., help="Item set: folder, file or Hub id (in the item schema, or with --mapping/--map)."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", "-m", help="Column-mapping YAML for a foreign dataset."),
    maps: Optional[List[str]] = typer.Option(None, "--map", help="FIELD=COLUMN (repeatable)."),
    threshold: float = typer.Option(0.8, help="Near-duplicate threshold (token-set Jaccard)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the full report as JSON."),
    strict: bool = typer.Option(True, "--strict/--no-strict",
                                help="Exit with status 1 when there are problems (rows that do not fit the item schema, "
                                     "duplicate ids, split leakage); --no-strict only reports them."),
):
    """Quality checks: balance, duplicates, split leakage, lengths (a table; --json for the dict)."""
    from vat_hf.data.mapping import load_mapped
    from vat_hf.data.quality import check_items, print_report
    from vat_hf.data.storage import read_items
    from vat_hf.io import write_json

    try:
        if mapping or maps:
            items = load_mapped(source, _mapping(mapping, maps))
        else:
            items = read_items(source, validate=False)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    report = check_items(items, near_threshold=threshold)
    print_report(report, console=console, title=f"quality of {source}")
    if json_out:
        write_json(json_out, report)
        console.print(f"report -> {json_out}")
    if strict and not report["ok"]:
        raise typer.Exit(code=1)


@app.command("push")
def push_cmd(
    source: str = typer.Argument(..., help="Item set to upload: folder or file in the item schema (or with --mapping)."),
    repo_id: str = typer.Argument(..., help="Dataset repository, e.g. me/my-vat-items."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", "-m", help="Column-mapping YAML for a foreign dataset."),
    license: str = typer.Option("other", help="Licence id for the card (e.g. mit, cc-by-4.0)."),
    pretty_name: Optional[str] = typer.Option(None, help="Title of the dataset card."),
    private: Optional[bool] = typer.Option(None, "--private/--public", help="Visibility of a new repository."),
    token: Optional[str] = typer.Option(None, help="Hub token (default: the logged-in one)."),
    revision: Optional[str] = typer.Option(None, help="Branch to push to."),
    create_pr: bool = typer.Option(False, help="Open a pull request instead of committing to the branch."),
    message: Optional[str] = typer.Option(None, help="Commit message."),
    dry_run: Optional[Path] = typer.Option(None, help="Write the files that would be uploaded here; no network."),
):
    """Upload an item set to the Hub with a dataset card (schema, taxonomy, construction, splits, licence, citation)."""
    from vat_hf.data.hub import push_to_hub
    from vat_hf.data.mapping import load_mapped
    from vat_hf.data.storage import read_items

    try:
        items = load_mapped(source, _mapping(mapping, None)) if mapping else read_items(source)
        result = push_to_hub(items, repo_id, license=license, pretty_name=pretty_name, private=private, token=token,
                             revision=revision, create_pr=create_pr, commit_message=message, dry_run_dir=dry_run)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    files = ", ".join(f"{k} ({len(v)} B)" for k, v in result.files.items())
    if dry_run:
        console.print(f"dry run: would upload to {repo_id}: {files} -> written to {dry_run}")
    else:
        console.print(f"pushed to {result.url}: {files}" + (f"; deleted {result.deleted}" if result.deleted else ""))


def main() -> None:  # pragma: no cover
    """``python -m vat_hf.data.cli``: the commands of ``vat-hf data``, with its error surface."""
    import sys

    from vat_hf.errors import run_main, wants_verbose

    sys.exit(run_main(lambda: app(standalone_mode=False), wants_verbose(sys.argv)))


if __name__ == "__main__":  # pragma: no cover
    main()
