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
    results/<name>.json                 each intervention's result: provenance, both evaluations, VAT
    report/                             report.md, report.html, figures
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import yaml

from vat_hf.errors import RecipeError
from vat_hf.evaluation.config import DataConfig, EvalConfig
from vat_hf.interventions.config import InterventionConfig
from vat_hf.io import read_json, read_jsonl, write_json
from vat_hf.prompts import JudgePrompt
from vat_hf.values import canonical_value

logger = logging.getLogger(__name__)

__all__ = ["DataConfig", "EvalConfig", "ExperimentConfig", "ExperimentRunner", "InterventionConfig", "MetricConfig",
           "RecipeError", "run_experiment"]


def _from_mapping(cls, raw: Optional[Mapping], where: str):
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**raw)


@dataclass
class MetricConfig:
    n_bootstrap: int = 1000
    confidence: float = 0.95
    level: str = "basic"
    resample: str = "scene"  # unit of resampling: scene, country, domain or two_way
    centering: str = "none"  # "scene": ipsative centring per scene and state
    n_sign_flips: int = 5000  # permutations of the sign-flip tests and tax_null

    def kwargs(self) -> Dict[str, Any]:
        """The metric's keyword arguments (compute_vat, compare_paired) from this config."""
        return {"n_bootstrap": self.n_bootstrap, "confidence": self.confidence, "level": self.level,
                "resample": self.resample, "centering": self.centering, "n_sign_flips": self.n_sign_flips}


@dataclass
class ExperimentConfig:
    target_value: str
    model: Optional[str] = None  # None / "SmolLM2-135M-Instruct": the embedded default
    name: str = "vat-experiment"
    output_dir: str = "outputs/vat-experiment"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    interventions: List[InterventionConfig] = field(default_factory=list)

    @classmethod
    def from_dict(cls, raw: Mapping) -> "ExperimentConfig":
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RecipeError(f"experiment recipe: unknown key(s) {unknown}; known keys: {sorted(known)}")
        if "target_value" not in raw:
            raise RecipeError("experiment recipe: 'target_value' is required (a basic Schwartz value)")
        raw["target_value"] = canonical_value(raw["target_value"])
        raw["data"] = _from_mapping(DataConfig, raw.get("data"), "data")
        raw["eval"] = _from_mapping(EvalConfig, raw.get("eval"), "eval")
        raw["metric"] = _from_mapping(MetricConfig, raw.get("metric"), "metric")
        raw["interventions"] = [
            _from_mapping(InterventionConfig, spec, f"interventions[{i}]") for i, spec in enumerate(raw.get("interventions") or [])
        ]
        names = [spec.name for spec in raw["interventions"]]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RecipeError(f"interventions: names {duplicates} are used twice; give each a unique 'name'")
        return cls(**raw)

    @classmethod
    def from_yaml(cls, path) -> "ExperimentConfig":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"recipe {path} does not exist")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


class ExperimentRunner:
    """Runs an :class:`ExperimentConfig`; one loaded base model serves every evaluation that
    has something to judge (adapters are switched on it, never merged, never reloaded per
    intervention), and it is loaded only then."""

    def __init__(self, config: ExperimentConfig, progress: bool = True):
        self.config = config
        self.out = Path(config.output_dir)
        self.progress = progress
        self._loaded = None

    # -- model -------------------------------------------------------------------------------
    def _base(self, source):
        """The base model, loaded once (with the stage's dtype, device and attention)."""
        if self._loaded is None:
            from vat_hf.models import load_model

            self._loaded = load_model(source.resolved_path, dtype=source.dtype, device=str(source.device),
                                      attn_implementation=source.attn_implementation)
        return self._loaded.model

    def _model_for(self, source, adapter: Optional[str], adapter_name: Optional[str]):
        """The loaded base model with ``adapter`` active (or all adapters off for None)."""
        from peft import PeftModel

        model = self._base(source)
        if adapter is None:
            return model
        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, adapter, adapter_name=adapter_name)
            self._loaded.model = model
        elif adapter_name not in model.peft_config:
            model.load_adapter(adapter, adapter_name=adapter_name)
        model.set_adapter(adapter_name)
        model.eval()
        return model

    def _loader(self, adapter: Optional[str], stage: str):
        @contextlib.contextmanager
        def judging_model(source):
            model = self._model_for(source, adapter, stage)
            if adapter is None and hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    yield model
            else:
                yield model

        return judging_model

    def evaluate(self, stage: str, items: List[Mapping], prompt: JudgePrompt, adapter: Optional[str] = None) -> Dict:
        """One stage through :func:`vat_hf.evaluation.run_evaluation`; returns its results."""
        from vat_hf.evaluation import run_evaluation

        cfg = self.config
        eval_config = dataclasses.replace(cfg.eval, progress=cfg.eval.progress and self.progress)
        return run_evaluation(
            eval_config, items=items, prompt=prompt, output=self.out / "judgments" / f"{stage}.jsonl",
            model=cfg.model, adapter=adapter, name=stage, seed=cfg.seed, data_config=cfg.data.to_dict(),
            run_config={**cfg.to_dict(), "stage": stage}, default_cache_dir=self.out / "cache",
            loader=self._loader(adapter, stage))

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        from vat_hf.evaluation.results import intervention_result
        from vat_hf.interventions import check_intervention, realise
        from vat_hf.metrics.paired import compare_judgments, score_judgments
        from vat_hf.provenance import provenance

        cfg = self.config
        random.seed(cfg.seed)
        write_json(self.out / "config.json", cfg.to_dict())
        items = cfg.data.load(seed=cfg.seed)
        train_items = cfg.data.load_train(seed=cfg.seed) if any(s.needs_train_items for s in cfg.interventions) else []
        logger.info("%d %s items from %s", len(items), cfg.data.split, cfg.data.source)
        training = dict(base_model=cfg.model, target_value=cfg.target_value, data_source=cfg.data.source,
                        data_columns=cfg.data.columns)
        for spec in cfg.interventions:  # a bad training recipe fails now, not after the evaluations
            if spec.type != "prompt":
                check_intervention(spec, output_dir=self.out / "adapters" / spec.name, **training)
        baseline = self.evaluate("baseline", items, JudgePrompt(name="baseline"))
        results = []
        pre_records = read_jsonl(baseline["files"]["judgments"])
        posts: Dict[str, List[Dict]] = {}
        fingerprints: Dict[str, Any] = {"baseline": baseline["fingerprints"]}
        for spec in cfg.interventions:
            started = time.time()
            prompt, adapter = realise(spec, train_items=train_items, adapters_dir=self.out / "adapters", seed=cfg.seed,
                                      **training)
            post = self.evaluate(spec.name, items, prompt, adapter=adapter)
            posts[spec.name] = read_jsonl(post["files"]["judgments"])
            fingerprints[spec.name] = post["fingerprints"]
            vat = score_judgments(pre_records, posts[spec.name], cfg.target_value, seed=cfg.seed, **cfg.metric.kwargs())
            block = provenance(config=cfg.to_dict(), seed=cfg.seed, data=post["data"],
                               fingerprints={"pre": baseline["fingerprints"], "post": post["fingerprints"]},
                               started=started)
            result = intervention_result(
                name=spec.name, target_value=cfg.target_value, model=post["model"], provenance=block,
                intervention={**dataclasses.asdict(spec), "prompt": prompt.to_dict()}, pre=baseline, post=post, vat=vat)
            trajectory_file = Path(adapter) / "trajectory.jsonl" if adapter else None
            if trajectory_file is not None and trajectory_file.exists():
                from vat_hf.train.trajectory import drift_onset

                result["trajectory"] = read_jsonl(trajectory_file)
                result["drift_onset"] = drift_onset(result["trajectory"])
            path = write_json(self.out / "results" / f"{spec.name}.json", result)
            if adapter:  # the trained adapter's model card gets its VAT result
                from vat_hf.train.card import add_vat_result

                add_vat_result(adapter, result["vat"], data=result["data"])
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
                                        comparison=comparison)
        return {"results": results, "report": report_paths, "baseline": baseline["summary"], "comparison": comparison}


def run_experiment(config: "ExperimentConfig | str | Path", progress: bool = True, **overrides) -> Dict[str, Any]:
    if not isinstance(config, ExperimentConfig):
        config = ExperimentConfig.from_yaml(config)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "max_scenes":
            config.data.max_scenes = value
        elif hasattr(config, key):
            setattr(config, key, value)
        else:
            raise RecipeError(f"unknown override {key!r}")
    return ExperimentRunner(config, progress=progress).run()
