"""`vat-hf run`: one experiment recipe from base model to VAT report.

An experiment names a base model, a target value, the items and a list of interventions. The
run evaluates the base model once (baseline), realises each intervention
(:func:`vat_hf.interventions.realise`: a prompt, or an adapter trained with TRL), evaluates it
on the same items, scores it against the baseline with the VAT metric and writes one comparative
report. Every stage is one call of :func:`vat_hf.evaluation.run_evaluation`, the function
``vat-hf eval`` runs, with the recipe's ``eval:`` section as its :class:`EvalConfig`; its
judgment cache under ``output_dir`` is the one reuse layer, so a rerun (or a run killed part-way)
judges only what is missing, and a finished stage loads no weights at all.

Layout of ``output_dir``::

    config.json                         the resolved experiment config
    judgments/<stage>.jsonl             per-item records of the baseline and of each intervention
    judgments/results_<stage>.json      each evaluation's results (provenance, summary, statistics)
    judgments/samples_<stage>.jsonl     each evaluation's per-sample records (prompt text and hash)
    cache/judgments/                    the judgment cache
    adapters/<name>/                    trained adapters, with their model cards
    steering/<key>/                     steering vectors (vector.safetensors + vector.json), one per
                                        model, target, layers and train set; every strength reads it
    results/<name>.json                 each intervention's result: provenance, both evaluations, VAT
    report/                             report.md, report.html, figures
    .vat-hf.lock                        held while a run works here (a second run on it is refused)

The recipe is validated whole before anything is loaded or written
(:meth:`ExperimentConfig.from_yaml`, :mod:`vat_hf.validation`): YAML syntax (file, line,
column), a mapping at the top, known keys, every field's type and range from the dataclasses'
type hints, intervention names that are safe file names and not ``baseline`` (the baseline's
stage name), and every stage's files resolved inside ``output_dir``. Command-line overrides
(``--output-dir``, ``--max-scenes``) are validated the same way.

One run at a time per ``output_dir``: :meth:`ExperimentRunner.run` holds an exclusive lock on it
(:func:`vat_hf.io.folder_lock`) and a second run there fails at once, naming the process that
holds it. (Evaluations outside ``vat-hf run`` share a judgment cache safely; see
:mod:`vat_hf.evaluation.cache`.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Mapping, Optional, Tuple

from annotated_types import Ge, Gt, Lt, MinLen

from vat_hf.errors import RecipeError
from vat_hf.evaluation.config import DataConfig, EvalConfig
from vat_hf.interventions.config import InterventionConfig
from vat_hf.io import folder_lock, read_json, read_jsonl, write_json
from vat_hf.metrics.core import CENTERINGS, LEVELS, RESAMPLE_UNITS
from vat_hf.prompts import JudgePrompt
from vat_hf.validation import FieldError, RecipeSource, check_fields, check_inside, from_mapping, load_yaml, name_problem
from vat_hf.values import UnknownValueError, canonical_value

logger = logging.getLogger(__name__)

__all__ = ["DataConfig", "EvalConfig", "ExperimentConfig", "ExperimentRunner", "InterventionConfig", "MetricConfig",
           "RecipeError", "run_experiment"]


BASELINE = "baseline"
"""The baseline evaluation's stage name: its files are ``judgments/baseline.jsonl`` etc., so no
intervention may take it."""
RESERVED_STAGE_NAMES = (BASELINE,)


@dataclass
class MetricConfig:
    """The metric's settings (a recipe's ``metric:`` section); each field checked against its hint."""

    n_bootstrap: Annotated[int, Ge(0)] = field(default=1000, metadata={"help": "Bootstrap resamples (0: none)."})
    confidence: Annotated[float, Gt(0), Lt(1)] = field(default=0.95, metadata={"help": "Confidence level of the intervals."})
    level: Literal[LEVELS] = field(default="basic", metadata={"help": "basic, higher_order or micro values."})
    resample: Literal[RESAMPLE_UNITS] = field(
        default="scene", metadata={"help": "Unit of resampling: scene, country, domain or two_way."})
    centering: Literal[CENTERINGS] = field(
        default="none", metadata={"help": "'scene': ipsative centring per scene and state."})
    n_sign_flips: Annotated[int, Ge(0)] = field(
        default=5000, metadata={"help": "Permutations of the sign-flip tests and tax_null."})

    def __post_init__(self):
        check_fields(self)

    def kwargs(self) -> Dict[str, Any]:
        """The metric's keyword arguments (compute_vat, compare_paired) from this config."""
        return {"n_bootstrap": self.n_bootstrap, "confidence": self.confidence, "level": self.level,
                "resample": self.resample, "centering": self.centering, "n_sign_flips": self.n_sign_flips}


@dataclass
class ExperimentConfig:
    """An experiment recipe: validated whole when it is made (every field against its type hint,
    the intervention names, every stage's files inside ``output_dir``)."""

    target_value: str = field(metadata={"help": "The basic Schwartz value the interventions aim at (e.g. Benevolence)."})
    model: Optional[str] = field(
        default=None, metadata={"help": "Hub id or folder of the base model (default: the embedded SmolLM2-135M-Instruct)."})
    name: Annotated[str, MinLen(1)] = field(default="vat-experiment", metadata={"help": "The report's title."})
    output_dir: Annotated[str, MinLen(1)] = field(
        default="outputs/vat-experiment", metadata={"help": "Where every file of the run goes."})
    seed: Annotated[int, Ge(0)] = field(
        default=0, metadata={"help": "Seed of every random choice (scene sample, demonstrations, bootstrap)."})
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    interventions: List[InterventionConfig] = field(default_factory=list)

    def __post_init__(self):
        check_fields(self)
        try:
            self.target_value = canonical_value(self.target_value)
        except UnknownValueError as err:
            raise FieldError("target_value", self.target_value, str(err).split(";")[0],
                             fix=str(err).split("; ", 1)[-1]) from None
        # a steering entry with `strengths` is one intervention per strength (a dose-response)
        self.interventions = [arm for spec in self.interventions for arm in spec.expand()]
        for i, spec in enumerate(self.interventions):
            if spec.target_values is not None and self.target_value not in spec.target_values:
                raise FieldError(("interventions", i, "target_values"), spec.target_values,
                                 f"limits intervention {spec.name!r} to other targets than this experiment's "
                                 f"{self.target_value!r}", fix="drop its target_values (they select targets in a sweep recipe)")
        seen: Dict[str, int] = {}
        for i, spec in enumerate(self.interventions):
            key = ("interventions", i, "name")
            problem = name_problem(spec.name, reserved=RESERVED_STAGE_NAMES)
            if problem is not None:
                raise FieldError(key, spec.name, *problem)
            if spec.name.lower() in seen:
                raise FieldError(key, spec.name, f"interventions[{seen[spec.name.lower()]}] has this name too",
                                 fix="give each intervention a unique 'name' (names differing only in case are one file)")
            seen[spec.name.lower()] = i
        for stage in (BASELINE, *seen):
            for kind, path in self.stage_paths(stage).items():
                check_inside(path, self.output_dir, f"stage {stage!r} {kind} file")

    def stage_paths(self, stage: str) -> Dict[str, Path]:
        """Every file and folder a stage writes: the judgments, its evaluation's results and
        per-sample records (in ``eval.log_dir`` when set), and, for an intervention, its result
        and its adapter folder."""
        out = Path(self.output_dir)
        judgments = out / "judgments" / f"{stage}.jsonl"
        log_dir = Path(self.eval.log_dir) if self.eval.log_dir else judgments.parent
        paths = {"judgments": judgments, "evaluation results": log_dir / f"results_{stage}.json",
                 "samples": log_dir / f"samples_{stage}.jsonl"}
        if stage != BASELINE:
            paths.update({"result": out / "results" / f"{stage}.json", "adapter": out / "adapters" / stage})
        return paths

    @classmethod
    def from_dict(cls, raw: Any, source: Optional[RecipeSource] = None) -> "ExperimentConfig":
        """The config of a recipe mapping, validated whole (see :func:`vat_hf.validation.from_mapping`);
        ``source`` (from :func:`vat_hf.validation.load_yaml`) puts file, line and column in errors."""
        return from_mapping(cls, raw, source)

    @classmethod
    def from_yaml(cls, path, overrides: Optional[Mapping[Tuple[str, ...], Any]] = None) -> "ExperimentConfig":
        """The config of a recipe file, validated whole; ``overrides`` (``{("data", "max_scenes"): 2}``)
        replace keys before validation and are named as command-line values in errors."""
        raw, source = load_recipe(path)
        return cls.from_dict(apply_overrides(raw, source, overrides or {}), source)

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def load_recipe(path) -> Tuple[Any, RecipeSource]:
    """A recipe file's mapping and where its keys are (see :func:`vat_hf.validation.load_yaml`)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist" if not path.exists() else f"recipe {path} is not a file",
                          fix="give the path of an experiment recipe YAML (see recipes/demo/)")
    raw, source = load_yaml(path)
    return ({} if raw is None else raw), source


def apply_overrides(raw: Any, source: RecipeSource, overrides: Mapping[Tuple[str, ...], Any]) -> Any:
    """``raw`` with each ``key path -> value`` of ``overrides`` set (None values skipped); the
    keys are then placed on the command line in error messages."""
    if not isinstance(raw, Mapping) or not overrides:
        return raw
    raw = dict(raw)
    for key, value in overrides.items():
        if value is None:
            continue
        node = raw
        for part in key[:-1]:
            inner = node.get(part)
            node[part] = dict(inner) if isinstance(inner, Mapping) else {}
            node = node[part]
        node[key[-1]] = value
        source.marks.pop(tuple(key), None)
        source.overridden[tuple(key)] = "--" + key[-1].replace("_", "-")
    return raw


class ModelPool:
    """Loaded base models by how they were loaded (path, dtype, device, attention), holding one
    at a time: an experiment loads its base model once, and a sweep (:mod:`vat_hf.sweep`) shares
    one pool across its cells, so each model is loaded once for all of its cells."""

    def __init__(self):
        self._key = None
        self._loaded = None

    def get(self, source):
        """The :class:`~vat_hf.models.LoadedModel` of ``source`` (an ``HFModelSource``)."""
        key = (source.resolved_path, str(source.dtype), str(source.device), source.attn_implementation)
        if self._key != key:
            from vat_hf.models import load_model

            self._loaded = None  # the previous model goes before the next one is loaded
            self._loaded = load_model(source.resolved_path, dtype=source.dtype, device=str(source.device),
                                      attn_implementation=source.attn_implementation)
            self._key = key
        return self._loaded


def adapter_slot(stage: str, adapter: str) -> str:
    """The adapter's name on the shared base model: the stage and its folder (two cells of a sweep
    may both call their intervention "sft", with different adapters)."""
    import hashlib

    return f"{stage}-{hashlib.sha256(str(Path(adapter).resolve()).encode()).hexdigest()[:10]}"


def answer_mass(summary: Mapping[str, Any]) -> Optional[float]:
    """How much of its answer the model gave as a rating: the mean option mass, or in generate
    mode (no option probabilities) the fraction of items rated; None when there is neither."""
    mass = summary.get("option_mass_mean")
    if isinstance(mass, (int, float)) and mass == mass:
        return float(mass)
    n = summary.get("n_items") or 0
    return (n - int(summary.get("n_missing") or 0)) / n if n else None


class ExperimentRunner:
    """Runs an :class:`ExperimentConfig`; one loaded base model serves every evaluation that
    has something to judge (adapters are switched on it, never merged, never reloaded per
    intervention; steering hooks are added and removed around an evaluation), and it is loaded
    only then. ``models``: a :class:`ModelPool` shared with other runs (a sweep's cells);
    ``steering_dir``: where steering vectors are kept (default ``output_dir/steering``)."""

    def __init__(self, config: ExperimentConfig, progress: bool = True, models: Optional[ModelPool] = None,
                 steering_dir=None):
        self.config = config
        self.out = Path(config.output_dir)
        self.progress = progress
        self.models = models or ModelPool()
        self.steering_dir = Path(steering_dir) if steering_dir else self.out / "steering"

    # -- model -------------------------------------------------------------------------------
    def _base(self, source):
        """The base model, loaded once (with the stage's dtype, device and attention)."""
        return self.models.get(source).model

    def _model_for(self, source, adapter: Optional[str], adapter_name: Optional[str]):
        """The loaded base model with ``adapter`` active (or all adapters off for None)."""
        from peft import PeftModel

        model = self._base(source)
        if adapter is None:
            return model
        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, adapter, adapter_name=adapter_name)
            self.models.get(source).model = model
        elif adapter_name not in model.peft_config:
            model.load_adapter(adapter, adapter_name=adapter_name)
        model.set_adapter(adapter_name)
        model.eval()
        return model

    def _loader(self, adapter: Optional[str], stage: str, steering=None):
        @contextlib.contextmanager
        def judging_model(source):
            model = self._model_for(source, adapter, adapter_slot(stage, adapter) if adapter else None)
            with contextlib.ExitStack() as stack:
                if adapter is None and hasattr(model, "disable_adapter") and getattr(model, "peft_config", None):
                    stack.enter_context(model.disable_adapter())
                if steering is not None:
                    from vat_hf.interventions.steering import steer

                    stack.enter_context(steer(model, *steering))
                yield model

        return judging_model

    def _source(self):
        from vat_hf.evaluation.run import HFModelSource

        return HFModelSource(self.config.model, None, self.config.eval, self.config.eval.device)

    def evaluate(self, stage: str, items: List[Mapping], prompt: JudgePrompt, adapter: Optional[str] = None,
                 steering=None) -> Dict:
        """One stage through :func:`vat_hf.evaluation.run_evaluation`; returns its results.
        ``steering``: ``(vector, strength)``, added by hooks while this stage judges."""
        from vat_hf.evaluation import run_evaluation

        cfg = self.config
        eval_config = dataclasses.replace(cfg.eval, progress=cfg.eval.progress and self.progress)
        return run_evaluation(
            eval_config, items=items, prompt=prompt, output=cfg.stage_paths(stage)["judgments"],
            model=cfg.model, adapter=adapter, name=stage, seed=cfg.seed, data_config=cfg.data.to_dict(),
            run_config={**cfg.to_dict(), "stage": stage}, default_cache_dir=self.out / "cache",
            loader=self._loader(adapter, stage, steering),
            model_variant=steering[0].variant(steering[1]) if steering is not None else None)

    def _steering_inputs(self) -> Dict[str, Any]:
        """What realising a steering intervention needs: where vectors live, the model files'
        fingerprint that keys them, and the unsteered base model (loaded only if a vector must be
        computed)."""
        source = self._source()
        files = source.file_fingerprints()

        def load_base():
            return self._model_for(source, None, None), source.tokenizer

        return {"steering_dir": self.steering_dir, "model_key": files[0] if files else source.name_or_path,
                "load_base": load_base}

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        """The whole experiment, holding ``output_dir``'s lock (a second run there is refused)."""
        with folder_lock(self.out, what="output_dir"):
            return self._run()

    def _run(self) -> Dict[str, Any]:
        from vat_hf.evaluation.results import intervention_result
        from vat_hf.interventions import check_intervention, realise
        from vat_hf.metrics.paired import compare_judgments, score_judgments
        from vat_hf.provenance import provenance

        cfg = self.config
        random.seed(cfg.seed)
        training = dict(base_model=cfg.model, target_value=cfg.target_value, data_source=cfg.data.source,
                        data_columns=cfg.data.columns)
        for spec in cfg.interventions:  # a bad training recipe fails now, before anything is loaded or written
            if spec.type in ("sft", "dpo"):
                check_intervention(spec, output_dir=self.out / "adapters" / spec.name, **training)
        write_json(self.out / "config.json", cfg.to_dict())
        items = cfg.data.load(seed=cfg.seed)
        train_items = cfg.data.load_train(seed=cfg.seed) if any(s.needs_train_items for s in cfg.interventions) else []
        logger.info("%d %s items from %s", len(items), cfg.data.split, cfg.data.source)
        steering_inputs = self._steering_inputs() if any(s.type == "steering" for s in cfg.interventions) else {}
        baseline = self.evaluate(BASELINE, items, JudgePrompt(name=BASELINE))
        results = []
        pre_records = read_jsonl(baseline["files"]["judgments"])
        posts: Dict[str, List[Dict]] = {}
        fingerprints: Dict[str, Any] = {BASELINE: baseline["fingerprints"]}
        flagged = []
        for spec in cfg.interventions:
            started = time.time()
            prompt, adapter, steering = realise(
                spec, train_items=train_items, adapters_dir=self.out / "adapters", seed=cfg.seed,
                **(steering_inputs if spec.type == "steering" else {}), **training)
            post = self.evaluate(spec.name, items, prompt, adapter=adapter, steering=steering)
            block = provenance(config=cfg.to_dict(), seed=cfg.seed, data=post["data"],
                               fingerprints={"pre": baseline["fingerprints"], "post": post["fingerprints"]},
                               started=started)
            intervention = {**dataclasses.asdict(spec), "prompt": prompt.to_dict()}
            if steering is not None:
                intervention["steering"] = {**steering[0].meta, **steering[0].variant(steering[1]),
                                            "prefix_reuse": "composed: the hooks are active while the shared "
                                                            "prefix's key/value cache is computed"}
            mass = answer_mass(post["summary"])
            if spec.min_option_mass is not None and (mass is None or mass < spec.min_option_mass):
                # The model mostly stopped answering with a rating: its renormalised ratings are not
                # its judgments, so this arm is recorded and never scored.
                flag = {"reason": "option_mass_below_threshold", "option_mass_mean": mass,
                        "min_option_mass": spec.min_option_mass,
                        "words": f"mean option mass {'n/a' if mass is None else f'{mass:.3g}'} is below "
                                 f"min_option_mass {spec.min_option_mass:g}: not scored"}
                result = intervention_result(
                    name=spec.name, target_value=cfg.target_value, model=post["model"], provenance=block,
                    intervention=intervention, pre=baseline, post=post, vat=None)
                result["flag"] = flag
                logger.warning("%s: %s", spec.name, flag["words"])
                write_json(cfg.stage_paths(spec.name)["result"], result)
                flagged.append(result)
                continue
            posts[spec.name] = read_jsonl(post["files"]["judgments"])
            fingerprints[spec.name] = post["fingerprints"]
            vat = score_judgments(pre_records, posts[spec.name], cfg.target_value, seed=cfg.seed,
                                  pre_name=str(baseline["files"]["judgments"]), post_name=str(post["files"]["judgments"]),
                                  **cfg.metric.kwargs())
            result = intervention_result(
                name=spec.name, target_value=cfg.target_value, model=post["model"], provenance=block,
                intervention=intervention, pre=baseline, post=post, vat=vat)
            trajectory_file = Path(adapter) / "trajectory.jsonl" if adapter else None
            if trajectory_file is not None and trajectory_file.exists():
                from vat_hf.train.trajectory import drift_onset

                result["trajectory"] = read_jsonl(trajectory_file)
                result["drift_onset"] = drift_onset(result["trajectory"])
            path = write_json(cfg.stage_paths(spec.name)["result"], result)
            if adapter:  # the trained adapter's model card gets its VAT result
                from vat_hf.train.card import add_vat_result

                add_vat_result(adapter, result["vat"], data=result["data"], experiment=cfg.name)
            results.append(read_json(path))
        # The interventions against each other: differences bootstrapped on the same resampled scenes
        # (every arm here shares the baseline; compare_judgments also takes arms with their own).
        comparison = None
        if len(posts) > 1:
            started = time.time()
            comparison = compare_judgments({name: (pre_records, post) for name, post in posts.items()}, cfg.target_value,
                                           seed=cfg.seed, **cfg.metric.kwargs())
            comparison["provenance"] = provenance(config=cfg.to_dict(), seed=cfg.seed, data=baseline["data"],
                                                  fingerprints=fingerprints, started=started)
            write_json(self.out / "comparison.json", comparison)
        report_paths = {}
        if results:
            from vat_hf.report import write_report

            report_paths = write_report(results, self.out / "report", title=f"{cfg.name}: toward {cfg.target_value}",
                                        comparison=comparison, not_scored=flagged)
        return {"results": results, "flagged": flagged, "report": report_paths, "baseline": baseline["summary"],
                "comparison": comparison}


OVERRIDES = {"max_scenes": ("data", "max_scenes")}
"""Command-line overrides that are not top-level keys: the key path they replace."""


def run_experiment(config: "ExperimentConfig | str | Path", progress: bool = True, **overrides) -> Dict[str, Any]:
    """Run a recipe (a path or an :class:`ExperimentConfig`) with ``overrides`` of its keys
    (``output_dir=...``, ``max_scenes=...``; None: keep the recipe's), validated with the recipe."""
    known = {f.name for f in dataclasses.fields(ExperimentConfig)}
    paths = {}
    for key, value in overrides.items():
        if key not in OVERRIDES and key not in known:
            raise RecipeError(f"unknown override {key!r}", fix=f"override one of {sorted(known | set(OVERRIDES))}")
        paths[OVERRIDES.get(key, (key,))] = value
    if isinstance(config, ExperimentConfig):
        source = RecipeSource(None)
        config = ExperimentConfig.from_dict(apply_overrides(config.to_dict(), source, paths), source)
    else:
        config = ExperimentConfig.from_yaml(config, overrides=paths)
    return ExperimentRunner(config, progress=progress).run()
