"""`vat-hf run`: one experiment recipe from base model to VAT report.

An experiment names a base model, a target value, the items and a list of interventions. The
run evaluates the base model once (baseline), applies each intervention, evaluates it on the
same items, scores each against the baseline with the VAT metric and writes one comparative
report. Every stage writes its file atomically under ``output_dir`` and a re-run reuses finished
stages (judgments whose item ids and prompt match), so an interrupted run resumes.

Layout of ``output_dir``::

    config.json                 the resolved experiment config
    judgments/baseline.jsonl    per-item records of the base model
    judgments/<name>.jsonl      per-item records after each intervention
    cache/judgments/            the evaluator's judgment cache (a stage killed part-way resumes)
    results/<name>.json         the result of each intervention (config, versions, seed, metric)
    report/                     report.md, report.html, figures
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import random
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import yaml

from vat_hf.io import read_json, read_jsonl, write_json, write_jsonl
from vat_hf.prompts import JudgePrompt
from vat_hf.values import canonical_value

logger = logging.getLogger(__name__)

PACKAGES = ("vat-hf", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "evaluate", "numpy", "scipy")
INTERVENTION_TYPES = ("prompt", "sft", "dpo")


class RecipeError(ValueError):
    """A recipe key or value that cannot be used; names the key and the fix."""


def package_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _from_mapping(cls, raw: Optional[Mapping], where: str):
    raw = dict(raw or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**raw)


@dataclass
class DataConfig:
    source: str = "builtin"
    split: str = "test"
    max_scenes: Optional[int] = None
    columns: Optional[Dict[str, str]] = None  # column mapping for sources with other names


@dataclass
class EvalConfig:
    dtype: str = "auto"
    device: Optional[str] = None
    max_batch_tokens: int = 8192
    max_batch_size: int = 64


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
class InterventionConfig:
    type: str
    name: Optional[str] = None
    # prompt
    k_shots: int = 0
    system_prompt: bool = True
    # sft / dpo: a training recipe (TRL config YAML) and overrides of its keys
    recipe: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.type not in INTERVENTION_TYPES:
            raise RecipeError(f"intervention type {self.type!r} is not one of {INTERVENTION_TYPES}")
        if self.type != "prompt" and not self.recipe:
            raise RecipeError(f"{self.type} intervention {self.name or ''}: give 'recipe', the training config YAML")
        if self.name is None:
            self.name = f"prompt-k{self.k_shots}" if self.type == "prompt" else self.type


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


def _reusable(path: Path, items: List[Mapping], prompt: JudgePrompt, model_key: str) -> Optional[List[Dict]]:
    """Finished judgments of the same items under the same prompt and model, or None."""
    if not path.exists():
        return None
    records = read_jsonl(path)
    if [r.get("id") for r in records] != [item["id"] for item in items]:
        return None
    if any(r.get("prompt_hash") != prompt.fingerprint() or r.get("model_key") != model_key for r in records):
        return None
    return records


class ExperimentRunner:
    """Runs an :class:`ExperimentConfig`; one loaded base model serves every evaluation
    (adapters are switched on it, never merged, never reloaded per intervention)."""

    def __init__(self, config: ExperimentConfig, progress: bool = True):
        self.config = config
        self.out = Path(config.output_dir)
        self.progress = progress
        self._loaded = None

    # -- model -------------------------------------------------------------------------------
    @property
    def loaded(self):
        if self._loaded is None:
            from vat_hf.models import load_model

            self._loaded = load_model(self.config.model, dtype=self.config.eval.dtype, device=self.config.eval.device)
        return self._loaded

    def _model_for(self, adapter: Optional[str], adapter_name: Optional[str]):
        """The loaded base model with ``adapter`` active (or all adapters off for None)."""
        model = self.loaded.model
        from peft import PeftModel

        if adapter is None:
            return model
        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, adapter, adapter_name=adapter_name)
            self.loaded.model = model
        elif adapter_name not in model.peft_config:
            model.load_adapter(adapter, adapter_name=adapter_name)
        model.set_adapter(adapter_name)
        model.eval()
        return model

    def evaluate(self, stage: str, items: List[Mapping], prompt: JudgePrompt, adapter: Optional[str] = None) -> List[Dict]:
        from vat_hf.evaluation import Evaluator

        path = self.out / "judgments" / f"{stage}.jsonl"
        model_key = f"{self.loaded.resolved_path}|{adapter or ''}"
        reused = _reusable(path, items, prompt, model_key)
        if reused is not None:
            logger.info("reusing finished judgments %s", path)
            return reused
        model = self._model_for(adapter, stage)
        if adapter is None and hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                records = self._judge(model, items, prompt)
        else:
            records = self._judge(model, items, prompt)
        for record in records:
            record["model_key"] = model_key
        write_jsonl(path, records)
        return records

    def _judge(self, model, items, prompt):
        from vat_hf.evaluation import Evaluator

        # The judgment cache under output_dir makes an evaluation killed part-way resume where it
        # stopped (finished stages are reused whole by _reusable).
        evaluator = Evaluator(model, self.loaded.tokenizer, prompt=prompt, max_batch_tokens=self.config.eval.max_batch_tokens,
                              max_batch_size=self.config.eval.max_batch_size, progress=self.progress,
                              cache_dir=self.out / "cache")
        return evaluator.judge(items)

    # -- interventions ---------------------------------------------------------------------
    def apply(self, spec: InterventionConfig, train_items: List[Mapping]):
        """(prompt, adapter path) that realise the intervention."""
        if spec.type == "prompt":
            from vat_hf.interventions import value_prompt

            prompt = value_prompt(self.config.target_value, train_items, k_shots=spec.k_shots,
                                  system_prompt=spec.system_prompt, seed=self.config.seed, name=spec.name)
            return prompt, None
        from vat_hf.train import train_intervention

        adapter = train_intervention(spec, self.config, train_items, self.out / "adapters" / spec.name)
        return JudgePrompt(), str(adapter)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        from vat_hf.data.sources import load_items
        from vat_hf.evaluation import summarize
        from vat_hf.metrics.paired import compare_judgments, score_judgments

        cfg = self.config
        random.seed(cfg.seed)
        write_json(self.out / "config.json", cfg.to_dict())
        items = load_items(cfg.data.source, split=cfg.data.split, max_scenes=cfg.data.max_scenes, seed=cfg.seed,
                           columns=cfg.data.columns)
        needs_train = any(spec.type != "prompt" or spec.k_shots > 0 for spec in cfg.interventions)
        train_items = load_items(cfg.data.source, split="train", seed=cfg.seed, columns=cfg.data.columns) if needs_train else []
        logger.info("%d %s items from %s", len(items), cfg.data.split, cfg.data.source)
        if any(spec.type != "prompt" for spec in cfg.interventions):
            from vat_hf.train import check_intervention  # a bad training recipe fails now, not after the evaluations

            for spec in cfg.interventions:
                if spec.type != "prompt":
                    check_intervention(spec, cfg, self.out / "adapters" / spec.name)
        baseline = self.evaluate("baseline", items, JudgePrompt(name="baseline"))
        baseline_summary = summarize(baseline).to_dict()
        results = []
        posts: Dict[str, List[Dict]] = {}
        for spec in cfg.interventions:
            prompt, adapter = self.apply(spec, train_items)
            post = self.evaluate(spec.name, items, prompt, adapter=adapter)
            posts[spec.name] = post
            vat = score_judgments(baseline, post, cfg.target_value, seed=cfg.seed, **cfg.metric.kwargs())
            result = {
                "name": spec.name,
                "model": {"name_or_path": self.loaded.name_or_path, "resolved_path": self.loaded.resolved_path, "adapter": adapter},
                "target_value": cfg.target_value,
                "data": {**dataclasses.asdict(cfg.data), "n_items": len(items), "n_scenes": len({i["scene_id"] for i in items})},
                "intervention": {**dataclasses.asdict(spec), "prompt": prompt.to_dict()},
                "evaluation": {"pre": baseline_summary, "post": summarize(post).to_dict()},
                "versions": package_versions(),
                "seed": cfg.seed,
                "judgments": {"pre": str(self.out / "judgments" / "baseline.jsonl"),
                              "post": str(self.out / "judgments" / f"{spec.name}.jsonl")},
                "vat": vat,
            }
            trajectory_file = Path(adapter) / "trajectory.jsonl" if adapter else None
            if trajectory_file is not None and trajectory_file.exists():
                from vat_hf.train.trajectory import drift_onset

                result["trajectory"] = read_jsonl(trajectory_file)
                result["drift_onset"] = drift_onset(result["trajectory"])
            write_json(self.out / "results" / f"{spec.name}.json", result)
            if adapter:  # the trained adapter's model card gets its VAT result
                from vat_hf.train.card import add_vat_result

                add_vat_result(adapter, result["vat"])
            results.append(read_json(self.out / "results" / f"{spec.name}.json"))
        # The interventions against each other: differences bootstrapped on the same resampled scenes
        # (every arm here shares the baseline; compare_judgments also takes arms with their own).
        comparison = None
        if len(posts) > 1:
            comparison = compare_judgments({name: (baseline, post) for name, post in posts.items()}, cfg.target_value,
                                           seed=cfg.seed, **cfg.metric.kwargs())
            write_json(self.out / "comparison.json", comparison)
        report_paths = {}
        if results:
            from vat_hf.report import write_report

            report_paths = write_report(results, self.out / "report", title=f"{cfg.name}: toward {cfg.target_value}",
                                        comparison=comparison)
        return {"results": results, "report": report_paths, "baseline": baseline_summary, "comparison": comparison}


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
