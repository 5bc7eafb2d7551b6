"""Sweeps: the paper's grid of models x target values x interventions in one recipe.

A sweep recipe is an experiment recipe that lists ``models`` (or one ``model``),
``target_values`` (a list, or ``all`` for the ten basic values) and ``interventions``; a steering
entry's ``strengths`` and any entry's ``target_values`` (the targets it runs for) apply too::

    name: smollm2-grid
    models: [SmolLM2-135M-Instruct]
    target_values: all
    interventions:
      - {type: prompt, name: prompt-k4, k_shots: 4}
      - {type: steering, name: steer, strengths: [4, 8, 40], target_values: [Benevolence, Power]}

Each **cell** (model, target, intervention arm) is one experiment of :mod:`vat_hf.pipeline` with
that single intervention, in its own folder ``cells/<cell id>/`` (whose ``config.json`` is a
recipe ``vat-hf run`` takes alone). The cell id is readable and stable, built from the names and
not from positions: ``<model>__<target>__<intervention>`` (``smollm2-135m-instruct__power__steer-s8``).

What is shared, and how:

* **The baseline** is judged once per model and evaluation setting: every cell's evaluations use
  one judgment cache (``cache/``), keyed by the model's files, the prompt and the scoring setup,
  so the first cell of a model judges the baseline and every later one reads it back without
  loading weights (the judgment cache is the one reuse layer; nothing else is cached).
* **The model** is loaded once for all cells of that model (:class:`vat_hf.pipeline.ModelPool`);
  cells run grouped by model.
* **Steering vectors** are computed once per model, target and layers (``steering/``) and read by
  every strength. Prompt interventions are built per target from train scenes, SFT/DPO adapters
  trained once per (model, target) in their cell, as in a single experiment.

Every cell is resumable and written atomically: ``cells/<id>/status.json`` says ``running``,
``done``, ``flagged`` (evaluated, not scored: see ``min_option_mass``) or ``failed`` (with the
error and traceback), and a rerun skips a finished cell whose configuration is unchanged and
resumes an interrupted one from the judgment cache. A failed cell does not stop the others.
``vat-hf run RECIPE --only model=...,target=...`` runs a subset (:func:`parse_only`).

After the cells, the grid's outputs go to ``grid/``: one row per cell (``cells.csv``,
``cells.json``), a trade-off matrix per model x intervention (:mod:`vat_hf.metrics.grid`: JSON,
CSV, heatmap), the paired comparisons per target (interventions on one model, models under one
intervention: :func:`vat_hf.metrics.paired.compare_judgments`), dose-responses of steering
strengths, ``summary.md`` and ``index.html`` linking every cell's own report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, List, Mapping, Optional, Sequence

from annotated_types import Ge, MinLen

from vat_hf.errors import RecipeError
from vat_hf.evaluation.config import DataConfig, EvalConfig
from vat_hf.interventions.config import InterventionConfig
from vat_hf.io import folder_lock, read_json, read_jsonl, write_json
from vat_hf.pipeline import ExperimentConfig, ExperimentRunner, MetricConfig, ModelPool, apply_overrides
from vat_hf.pipeline import load_recipe as read_recipe
from vat_hf.validation import FieldError, RecipeSource, check_fields, from_mapping
from vat_hf.values import BASIC_VALUES, UnknownValueError, canonical_value

logger = logging.getLogger(__name__)

__all__ = ["Cell", "SweepConfig", "SweepRunner", "cell_id", "is_sweep", "load_recipe", "parse_only", "run_sweep", "slug"]

SWEEP_KEYS = ("models", "target_values")
ONLY_KEYS = ("model", "target", "intervention")
STATUS_FILE = "status.json"


def slug(name: Optional[str]) -> str:
    """A name as it appears in cell ids and file names.

    >>> slug("Qwen/Qwen2.5-7B-Instruct"), slug("Self-Direction"), slug("steer-s0.5")
    ('qwen2.5-7b-instruct', 'self-direction', 'steer-s0.5')
    """
    from vat_hf.models.loading import DEFAULT_MODEL

    text = str(name or DEFAULT_MODEL).rstrip("/").split("/")[-1].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", text).strip("-.") or "x"


def cell_id(model_slug: str, target_value: str, intervention: str) -> str:
    """``<model>__<target>__<intervention>``.

    >>> cell_id("smollm2-135m-instruct", "Benevolence", "prompt-k4")
    'smollm2-135m-instruct__benevolence__prompt-k4'
    """
    return f"{model_slug}__{slug(target_value)}__{slug(intervention)}"


def is_sweep(raw: Mapping) -> bool:
    """Whether a recipe mapping is a sweep (it lists ``models`` or ``target_values``)."""
    return any(key in raw for key in SWEEP_KEYS)


@dataclass(frozen=True)
class Cell:
    """One experiment of a sweep: a model, a target and one intervention arm."""

    id: str
    model: Optional[str]
    model_slug: str
    target_value: str
    intervention: InterventionConfig
    family: str  # the recipe entry it came from (the arms of a dose-response share it)

    def describe(self) -> Dict[str, Any]:
        spec = self.intervention
        return {"cell": self.id, "model": self.model, "model_slug": self.model_slug, "target_value": self.target_value,
                "intervention": spec.name, "type": spec.type, "family": self.family, "strength": spec.strength}


@dataclass
class SweepConfig:
    """A sweep recipe (see the module docstring), validated whole like an experiment recipe
    (:mod:`vat_hf.validation`): every field against its type hint, then the grid's own rules."""

    target_values: List[str] = field(
        metadata={"help": "Target values, one cell row each: a list of basic Schwartz values, or `all`."})
    models: List[Optional[str]] = field(
        default_factory=lambda: [None],
        metadata={"help": "Models (Hub ids or folders; null: the embedded SmolLM2-135M-Instruct)."})
    name: Annotated[str, MinLen(1)] = field(default="vat-sweep", metadata={"help": "The sweep's name (titles)."})
    output_dir: Annotated[str, MinLen(1)] = field(
        default="outputs/vat-sweep", metadata={"help": "Where every cell's folder and the grid's outputs go."})
    seed: Annotated[int, Ge(0)] = field(default=0, metadata={"help": "Seed of every cell (one seed: paired cells)."})
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    interventions: List[InterventionConfig] = field(default_factory=list)

    def __post_init__(self):
        check_fields(self)
        try:
            self.target_values = [canonical_value(t) for t in self.target_values]
        except UnknownValueError as err:
            raise FieldError("target_values", self.target_values, str(err).split(";")[0],
                             fix=str(err).split("; ", 1)[-1]) from None
        for key, values in (("models", [slug(m) for m in self.models]), ("target_values", self.target_values)):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise FieldError(key, getattr(self, key), f"lists {twice} twice (cell ids must be unique)",
                                 fix=f"keep one of each in {key}")
        if not self.interventions:
            raise FieldError("interventions", [], "is empty; a sweep needs at least one",
                             fix="list interventions: prompt, sft, dpo or steering entries")
        names = [arm.name for spec in self.interventions for arm in spec.expand()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise FieldError("interventions", names, f"names {twice} are used twice",
                             fix="give each intervention a unique 'name'")
        for i, spec in enumerate(self.interventions):
            extra = sorted(set(spec.target_values or []) - set(self.target_values))
            if extra:
                raise FieldError(("interventions", i, "target_values"), spec.target_values,
                                 f"{extra} are not among the sweep's target_values {self.target_values}",
                                 fix="add them to the sweep's target_values, or drop them here")
        for cell in self.cells():  # each cell's recipe is checked now, not when its turn comes
            self.cell_config(cell)

    @classmethod
    def from_dict(cls, raw: Any, source: Optional[RecipeSource] = None) -> "SweepConfig":
        """The config of a sweep recipe mapping (``model``/``target_value`` stand for a list of
        one; ``target_values: all`` for the ten basic values), validated whole."""
        if isinstance(raw, Mapping):
            raw = dict(raw)
            for one, many in (("model", "models"), ("target_value", "target_values")):
                if one in raw and many in raw:
                    raise RecipeError(f"{(source or RecipeSource(None)).prefix((one,))}sweep recipe: give "
                                      f"'{one}' or '{many}', not both", fix=f"list every one under {many}")
                if one in raw:
                    if source is not None and (one,) in source.marks:
                        source.marks[(many,)] = source.marks[(one,)]
                    raw[many] = [raw.pop(one)]
            if isinstance(raw.get("models"), str):
                raw["models"] = [raw["models"]]
            targets = raw.get("target_values")
            if isinstance(targets, str):
                raw["target_values"] = list(BASIC_VALUES) if targets.strip().lower() == "all" else [targets]
        return from_mapping(cls, raw, source)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def cells(self) -> List[Cell]:
        """Every cell, grouped by model, then by target (in the recipe's order), then intervention."""
        cells = []
        for model in self.models:
            model_slug = slug(model)
            for target in self.target_values:
                for spec in self.interventions:
                    if spec.target_values is not None and target not in spec.target_values:
                        continue
                    for arm in spec.expand():
                        cells.append(Cell(id=cell_id(model_slug, target, arm.name), model=model, model_slug=model_slug,
                                          target_value=target, intervention=arm, family=spec.name))
        return cells

    def cell_config(self, cell: Cell) -> ExperimentConfig:
        """The cell as a single experiment, with the sweep's shared judgment cache."""
        out = Path(self.output_dir)
        ev = dataclasses.replace(self.eval, cache_dir=self.eval.cache_dir or str(out / "cache"))
        spec = dataclasses.replace(cell.intervention, target_values=None)
        return ExperimentConfig(target_value=cell.target_value, model=cell.model, name=f"{self.name}/{cell.id}",
                                output_dir=str(out / "cells" / cell.id), seed=self.seed,
                                data=dataclasses.replace(self.data), eval=ev, metric=dataclasses.replace(self.metric),
                                interventions=[spec])


def load_recipe(path) -> "ExperimentConfig | SweepConfig":
    """A recipe file as a :class:`SweepConfig` (when it lists ``models`` or ``target_values``)
    or an :class:`~vat_hf.pipeline.ExperimentConfig` (one model, one target), validated whole
    with file, line and column in its errors."""
    raw, source = read_recipe(path)
    if isinstance(raw, Mapping) and is_sweep(raw):
        return SweepConfig.from_dict(raw, source)
    return ExperimentConfig.from_dict(raw, source)


def parse_only(filters: Sequence[str]) -> List[Dict[str, str]]:
    """``--only`` filters: each is ``key=value[,key=value...]`` with keys ``model``, ``target``
    and ``intervention``; a cell is kept when it matches every pair of any one filter.

    >>> parse_only(["model=SmolLM2-135M-Instruct,target=power", "intervention=steer-s8"])
    [{'model': 'smollm2-135m-instruct', 'target': 'Power'}, {'intervention': 'steer-s8'}]
    """
    parsed = []
    for text in filters:
        one: Dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ONLY_KEYS or not value.strip():
                raise RecipeError(f"--only {text!r}: {part!r} is not key=value with a key among {list(ONLY_KEYS)}",
                                  fix="e.g. --only model=SmolLM2-135M-Instruct,target=Benevolence")
            value = value.strip()
            one[key] = {"model": slug, "target": canonical_value, "intervention": slug}[key](value)
        if one:
            parsed.append(one)
    return parsed


def select_cells(cells: Sequence[Cell], only: Sequence[Mapping[str, str]]) -> List[Cell]:
    """The cells matching any of the ``only`` filters (all cells without filters); a filter that
    matches no cell is an error naming what there is."""
    if not only:
        return list(cells)

    def value(cell: Cell, key: str) -> List[str]:
        return {"model": [cell.model_slug], "target": [cell.target_value],
                "intervention": [slug(cell.intervention.name), slug(cell.family)]}[key]

    for f in only:
        for key, wanted in f.items():
            if not any(wanted in value(c, key) for c in cells):
                there = sorted({v for c in cells for v in value(c, key)})
                raise RecipeError(f"--only {key}={wanted}: no cell has it; the sweep's {key}s are {there}")
    return [c for c in cells if any(all(w in value(c, k) for k, w in f.items()) for f in only)]


def _fingerprint(config: ExperimentConfig) -> str:
    """What a finished cell must match to be reused: its whole configuration but where it lives
    and whether a progress bar was shown."""
    payload = {k: v for k, v in config.to_dict().items() if k != "output_dir"}
    payload["eval"] = {k: v for k, v in payload["eval"].items() if k != "progress"}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class SweepRunner:
    """Runs the (selected) cells of a :class:`SweepConfig`, then writes the grid's outputs."""

    def __init__(self, config: SweepConfig, only: Sequence[Mapping[str, str]] = (), progress: bool = True, console=None):
        self.config = config
        self.out = Path(config.output_dir)
        self.all_cells = config.cells()
        self.cells = select_cells(self.all_cells, only)
        self.progress = progress
        self.console = console

    def cell_dir(self, cell: Cell) -> Path:
        return self.out / "cells" / cell.id

    def status(self, cell: Cell) -> Optional[Dict[str, Any]]:
        path = self.cell_dir(cell) / STATUS_FILE
        return read_json(path) if path.exists() else None

    def _finished(self, cell: Cell, fingerprint: str) -> Optional[Dict[str, Any]]:
        status = self.status(cell)
        if status and status.get("status") in ("done", "flagged") and status.get("config_fingerprint") == fingerprint \
                and Path(status.get("result") or "").exists():
            return status
        return None

    def _check(self) -> None:
        """Every trained intervention's recipe is resolved and parsed before any evaluation."""
        from vat_hf.interventions import check_intervention

        for cell in self.cells:
            spec = cell.intervention
            if spec.type in ("sft", "dpo"):
                cfg = self.config.cell_config(cell)
                check_intervention(spec, base_model=cell.model, target_value=cell.target_value,
                                   data_source=cfg.data.source, data_columns=cfg.data.columns,
                                   output_dir=Path(cfg.output_dir) / "adapters" / spec.name)

    def _run_cell(self, cell: Cell, models: ModelPool) -> Dict[str, Any]:
        cfg = self.config.cell_config(cell)
        fingerprint = _fingerprint(cfg)
        done = self._finished(cell, fingerprint)
        if done is not None:
            return {**done, "skipped": True}
        folder = self.cell_dir(cell)
        started = time.time()
        base = {**cell.describe(), "config_fingerprint": fingerprint, "started": started}
        write_json(folder / STATUS_FILE, {**base, "status": "running"})
        try:
            outcome = ExperimentRunner(cfg, progress=False, models=models, steering_dir=self.out / "steering").run()
        except Exception as err:  # recorded; the other cells go on
            logger.error("cell %s failed: %s", cell.id, err)
            status = {**base, "status": "failed", "seconds": time.time() - started,
                      "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            write_json(folder / STATUS_FILE, status)
            return status
        flagged = bool(outcome["flagged"])
        report = (outcome.get("report") or {}).get("html")
        status = {**base, "status": "flagged" if flagged else "done", "seconds": time.time() - started,
                  "result": str(folder / "results" / f"{cell.intervention.name}.json"),
                  "report": str(report) if report else None}
        write_json(folder / STATUS_FILE, status)
        return status

    def run(self) -> Dict[str, Any]:
        """Run the selected cells (one sweep at a time per ``output_dir``: a lock, as for a single
        experiment) and write the grid's outputs."""
        with folder_lock(self.out, what="sweep output_dir"):
            return self._run()

    def _run(self) -> Dict[str, Any]:
        from vat_hf.provenance import provenance

        started = time.time()
        self._check()
        write_json(self.out / "sweep.json", {"config": self.config.to_dict(),
                                             "cells": [c.describe() for c in self.all_cells]})
        models = ModelPool()
        statuses: Dict[str, Dict[str, Any]] = {}
        with _Progress(self.cells, enabled=self.progress, console=self.console) as display:
            for cell in self.cells:
                display.start(cell)
                statuses[cell.id] = self._run_cell(cell, models)
                display.finish(cell, statuses[cell.id])
        del models
        summary = self.summarise()
        summary["run"] = {"cells_run": [c.id for c in self.cells], "wall_seconds": time.time() - started,
                          "skipped": [k for k, s in statuses.items() if s.get("skipped")],
                          "failed": [k for k, s in statuses.items() if s.get("status") == "failed"]}
        summary["provenance"] = provenance(config=self.config.to_dict(), seed=self.config.seed,
                                           data=summary.get("data") or {}, fingerprints={}, started=started)
        write_json(self.out / "grid" / "summary.json", summary)
        return summary

    # -- the grid's outputs ------------------------------------------------------------------
    def summarise(self) -> Dict[str, Any]:
        """Read every cell that has finished (in any run) and write ``grid/``."""
        return write_grid(self.config, self.all_cells, {c.id: self.status(c) for c in self.all_cells}, self.out)


# --------------------------------------------------------------------------------------------
# the grid's outputs


def _cell_row(cell: Cell, status: Optional[Mapping[str, Any]], result: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """One row of ``cells.json``: the cell, its status and time, and its numbers (a flagged or
    failed cell has no numbers; a ``vat`` of None where the gain is not resolved)."""
    row: Dict[str, Any] = {**cell.describe(), "status": (status or {}).get("status", "not run"),
                           "seconds": (status or {}).get("seconds"), "error": (status or {}).get("error"),
                           "report": (status or {}).get("report"), "result": (status or {}).get("result")}
    if result is None:
        return row
    post = (result.get("evaluation") or {}).get("post") or {}
    row.update(option_mass_post=post.get("option_mass_mean"), n_items=(result.get("data") or {}).get("n_items"),
               data_fingerprint=(result.get("data") or {}).get("fingerprint"), flag=result.get("flag"))
    metric = result.get("vat")
    if metric:
        ci = metric.get("ci") or {}
        row.update(gain=metric.get("gain"), gain_ci=ci.get("gain"), gain_status=metric.get("gain_status"),
                   tax=metric.get("tax"), tax_ci=ci.get("tax"), tax_null=(metric.get("tax_null") or {}).get("mean"),
                   tax_p=(metric.get("tax_null") or {}).get("p_value"), vat=metric.get("vat"), vat_ci=ci.get("vat"),
                   drift=metric.get("drift"), gnd=metric.get("gnd"))
    return row


def _records(result: Mapping[str, Any], phase: str) -> List[Dict]:
    return read_jsonl(result["evaluation"][phase]["judgments"])


def _compare(arms: Dict[str, tuple], target: str, config: SweepConfig, what: str) -> Optional[Dict[str, Any]]:
    from vat_hf.metrics.paired import compare_judgments

    if len(arms) < 2:
        return None
    comparison = compare_judgments(arms, target, seed=config.seed, **config.metric.kwargs())
    comparison["compared"] = what
    return comparison


def write_grid(config: SweepConfig, cells: Sequence[Cell], statuses: Mapping[str, Optional[Mapping[str, Any]]],
               out) -> Dict[str, Any]:
    """``grid/`` from the finished cells: ``cells.json`` / ``cells.csv``, ``matrix/`` (one
    trade-off matrix per model x intervention), ``comparisons/<target>.json`` (paired
    comparisons), ``dose_response/`` (steering strengths), ``summary.md`` and ``index.html``."""
    import csv
    import io

    from vat_hf.io import atomic_write_text
    from vat_hf.metrics.compare import compare_interventions, comparison_table, paired_table
    from vat_hf.metrics.grid import CSV_COLUMNS, matrix_csv_rows, tradeoff_matrix
    from vat_hf.report.grid import write_grid_report

    out = Path(out)
    grid = out / "grid"
    results: Dict[str, Dict[str, Any]] = {}
    for cell in cells:
        status = statuses.get(cell.id)
        if status and status.get("status") in ("done", "flagged") and Path(status.get("result") or "").exists():
            results[cell.id] = read_json(status["result"])
    rows = [_cell_row(c, statuses.get(c.id), results.get(c.id)) for c in cells]
    write_json(grid / "cells.json", rows)
    flat = ["cell", "model", "target_value", "intervention", "type", "strength", "status", "seconds", "gain", "gain_status",
            "tax", "tax_null", "vat", "option_mass_post", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=flat, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(grid / "cells.csv", buffer.getvalue())

    scored = {c.id: c for c in cells if c.id in results and results[c.id].get("vat")}
    # trade-off matrices: one per model x intervention arm, over the targets it was run for
    matrices = []
    groups: Dict[tuple, List[Cell]] = {}
    for c in scored.values():
        groups.setdefault((c.model_slug, c.intervention.name), []).append(c)
    for (model_slug, name), members in groups.items():
        matrix = tradeoff_matrix([results[c.id] for c in members], model=model_slug, intervention=name)
        matrix["cells"] = {c.target_value: c.id for c in members}
        stem = f"{model_slug}__{slug(name)}"
        write_json(grid / "matrix" / f"{stem}.json", matrix)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(matrix_csv_rows(matrix))
        atomic_write_text(grid / "matrix" / f"{stem}.csv", buffer.getvalue())
        matrices.append({"stem": stem, "matrix": matrix})

    # paired comparisons per target: interventions on one model (one baseline), models under
    # one intervention (each its own baseline); the items are the same, so differences are paired
    comparisons: Dict[str, List[Dict[str, Any]]] = {}
    target_tables: Dict[str, Dict[str, Any]] = {}
    for target in config.target_values:
        here = [c for c in scored.values() if c.target_value == target]
        found = []
        for model_slug in sorted({c.model_slug for c in here}):
            arms = {f"{c.model_slug}/{c.intervention.name}": (_records(results[c.id], "pre"), _records(results[c.id], "post"))
                    for c in here if c.model_slug == model_slug}
            comparison = _compare(arms, target, config, f"interventions on {model_slug}")
            if comparison:
                found.append(comparison)
        for name in sorted({c.intervention.name for c in here}):
            arms = {f"{c.model_slug}/{c.intervention.name}": (_records(results[c.id], "pre"), _records(results[c.id], "post"))
                    for c in here if c.intervention.name == name}
            comparison = _compare(arms, target, config, f"models under {name}")
            if comparison:
                found.append(comparison)
        if found:
            write_json(grid / "comparisons" / f"{slug(target)}.json", found)
        comparisons[target] = found
        if here:  # one summary table per target: every cell, flagged only from the paired comparisons
            named = [{**results[c.id], "name": f"{c.model_slug}/{c.intervention.name}"} for c in here]
            pairs = {"pairs": [p for comp in found for p in comp["pairs"]]} if found else None
            target_tables[target] = {"head": None, "rows": None,
                                     "paired": [(comp["compared"], comp["method"], paired_table(comp)) for comp in found]}
            target_tables[target]["head"], target_tables[target]["rows"] = comparison_table(
                compare_interventions(named, pairs))

    # dose-responses: the strengths of one steering entry for one model and target
    doses: Dict[tuple, List[Dict[str, Any]]] = {}
    for c, row in zip(cells, rows):
        if c.intervention.type == "steering" and c.id in results:
            doses.setdefault((c.model_slug, c.target_value, c.family), []).append(row)
    dose_response = []
    for (model_slug, target, family), members in doses.items():
        members = sorted(members, key=lambda r: r["strength"])
        entry = {"model": model_slug, "target_value": target, "intervention": family,
                 "min_option_mass": next(c.intervention.min_option_mass for c in cells
                                         if c.family == family and c.model_slug == model_slug and c.target_value == target),
                 "baseline_option_mass": (results[members[0]["cell"]]["evaluation"]["pre"] or {}).get("option_mass_mean"),
                 "rows": [{k: r.get(k) for k in ("cell", "strength", "status", "gain", "gain_ci", "gain_status", "tax",
                                                  "tax_ci", "tax_null", "vat", "option_mass_post", "flag")}
                          for r in members]}
        stem = f"{model_slug}__{slug(target)}__{slug(family)}"
        write_json(grid / "dose_response" / f"{stem}.json", entry)
        dose_response.append({"stem": stem, **entry})

    # what sharing the baseline saved: the first cell of a model judged it, the others read it back
    baselines: Dict[str, Dict[str, Any]] = {}
    for c in cells:
        if c.id not in results:
            continue
        pre = read_json(results[c.id]["evaluation"]["pre"]["results"])
        b = baselines.setdefault(c.model_slug, {"cells": 0, "judged_seconds": 0.0, "n_computed": 0, "read_back": 0})
        b["cells"] += 1
        if pre["stats"]["n_computed"]:
            b["judged_seconds"] += pre["timing"]["seconds"]
            b["n_computed"] += pre["stats"]["n_computed"]
        else:
            b["read_back"] += 1
    data = next((r.get("data") for r in results.values()), None)
    summary = {"name": config.name, "output_dir": str(out), "n_cells": len(cells),
               "status_counts": {s: sum(1 for r in rows if r["status"] == s) for s in sorted({r["status"] for r in rows})},
               "cells": rows, "matrices": [m["stem"] for m in matrices], "comparisons": comparisons,
               "dose_response": dose_response, "baselines": baselines, "data": data}
    write_grid_report(summary, [m["matrix"] for m in matrices], grid, target_tables)
    return summary


class _Progress:
    """A rich live display over the cells: done, running, failed, flagged, pending, and time."""

    def __init__(self, cells: Sequence[Cell], enabled: bool = True, console=None):
        self.cells = list(cells)
        self.enabled = enabled
        self.console = console
        self.state: Dict[str, Dict[str, Any]] = {c.id: {"status": "pending"} for c in self.cells}
        self.started = time.time()
        self._live = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self.console = self.console or Console(stderr=True)
            self._live = Live(self, console=self.console, refresh_per_second=1, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
        return False

    def start(self, cell: Cell) -> None:
        self.state[cell.id] = {"status": "running", "since": time.time()}

    def finish(self, cell: Cell, status: Mapping[str, Any]) -> None:
        word = "skipped" if status.get("skipped") else status.get("status")
        self.state[cell.id] = {"status": word, "seconds": status.get("seconds"), "error": status.get("error")}
        if self._live is not None:
            secs = status.get("seconds")
            self._live.console.log(f"{cell.id}: {word}" + (f" ({secs:.0f} s)" if secs and not status.get("skipped") else "")
                                   + (f": {status.get('error')}" if status.get("error") else ""), markup=False)

    def __rich__(self):
        from rich.table import Table

        counts: Dict[str, int] = {}
        for s in self.state.values():
            counts[s["status"]] = counts.get(s["status"], 0) + 1
        elapsed = time.time() - self.started
        finished = [s for s in self.state.values() if s["status"] in ("done", "flagged", "failed") and s.get("seconds")]
        pending = counts.get("pending", 0) + counts.get("running", 0)
        eta = f", about {sum(s['seconds'] for s in finished) / len(finished) * pending / 60:.0f} min left" if finished and pending else ""
        title = (f"cells: {len(self.cells)} · " + " · ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                 + f" · {elapsed / 60:.1f} min{eta}")
        table = Table(title=title, title_justify="left", show_edge=False)
        table.add_column("cell")
        table.add_column("status")
        table.add_column("time", justify="right")
        shown = [(cid, s) for cid, s in self.state.items() if s["status"] in ("running", "failed")]
        shown += [(cid, s) for cid, s in self.state.items() if s["status"] in ("done", "flagged", "skipped")][-5:]
        for cid, s in shown:
            secs = time.time() - s["since"] if s["status"] == "running" else s.get("seconds")
            table.add_row(cid, s["status"] + (f": {s['error']}" if s.get("error") else ""),
                          f"{secs:.0f} s" if secs else "")
        return table


def run_sweep(config: "SweepConfig | str | Path", only: Sequence[str] = (), progress: bool = True,
              **overrides) -> Dict[str, Any]:
    """Run a sweep recipe (a path or a :class:`SweepConfig`) with ``overrides`` of its keys
    (``output_dir=...``, ``max_scenes=...``; None: keep the recipe's), validated with the recipe;
    ``only``: ``--only`` filters."""
    from vat_hf.pipeline import OVERRIDES

    known = {f.name for f in dataclasses.fields(SweepConfig)}
    paths = {}
    for key, value in overrides.items():
        if key not in OVERRIDES and key not in known:
            raise RecipeError(f"unknown override {key!r}", fix=f"override one of {sorted(known | set(OVERRIDES))}")
        paths[OVERRIDES.get(key, (key,))] = value
    if isinstance(config, SweepConfig):
        raw, source = config.to_dict(), RecipeSource(None)
    else:
        raw, source = read_recipe(config)
        if not (isinstance(raw, Mapping) and is_sweep(raw)):
            raise RecipeError(f"recipe {config} is a single experiment (no 'models' or 'target_values')",
                              fix="run it with vat-hf run (vat_hf.pipeline.run_experiment)")
    config = SweepConfig.from_dict(apply_overrides(raw, source, paths), source)
    return SweepRunner(config, only=parse_only(only), progress=progress).run()
