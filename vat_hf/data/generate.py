"""Two-stage construction of new item sets with a generator chat model, as the paper builds its data.

Stage 1 asks the generator, for each country x domain, for ``scenarios_per_pair`` concrete
scenarios. Stage 2 asks it, for each scenario and each value, for one action that expresses the
value and one that goes against it. Every answer is parsed with the forgiving parser
(:mod:`vat_hf.data.parsing`) and validated (:func:`check_scenario`, :func:`check_action_pair`); a
bad answer is recorded as a failure and its prompt is retried, at most ``max_retries`` more times. A
scene whose values did not all get a valid pair is dropped (and recorded), so every kept scene is
complete. Near-identical actions inside a scene count as bad answers (token-set Jaccard >=
``dedup_threshold``, 0.8 by default), as do near-identical scenarios of one country x domain.

Generation is batched (``batch_size`` prompts per ``generate`` call) and resumable: the build
directory holds ``build.json`` (the settings), ``stage1/<country>--<domain>.json`` per finished
pair and ``scenes/<scene>.jsonl`` per finished scene (atomic writes); a re-run skips finished work.
Work is cut into fixed chunks and every chunk and attempt has its own seed, so an interrupted and
resumed build produces the same items as an uninterrupted one.

The generator is any Hugging Face causal LM (:class:`HFGenerator`; the embedded
SmolLM2-135M-Instruct by default) or any object with the same ``generate`` method.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

from vat_hf.data.fields import DEFAULT_TRAIN_FRACTION, POLARITY_WORDS, fill_splits, item_id, scene_id, slug
from vat_hf.data.parsing import ParseError, excerpt, extract_field, key_value, parse_structured
from vat_hf.data.quality import jaccard, tokens
from vat_hf.data.schema import to_dataset
from vat_hf.data.storage import save_items
from vat_hf.io import read_json, read_jsonl, write_json, write_jsonl
from vat_hf.values import BASIC_VALUES, MICRO_VALUES, UnknownValueError, definition, resolve_value_pair

logger = logging.getLogger(__name__)

# =============================================================================================
# Prompt wording for generation (the judging prompts live in vat_hf.prompts)
# =============================================================================================

STAGE1_SYSTEM = ("You write realistic, concrete everyday situations for research on human values. "
                 "You answer with JSON only.")
STAGE1_USER = (
    "Write {n} different concrete scenarios that a person living in {country} could face in the domain of {domain}. "
    "Each scenario is 1 to 3 sentences, names a specific person and place, and ends with a decision the person "
    "must make. Do not say what the person decides and do not mention values.\n\n"
    'Answer with only a JSON object of the form {{"scenarios": ["...", "..."]}}.'
)
STAGE1_PREFIX = '{"scenarios": ["'
STAGE2_SYSTEM = ("You write short first-person actions for research on human values. "
                 "You answer with JSON only.")
STAGE2_USER = (
    "Scenario: {scenario}\n\n"
    "Value: {value}. {definition}\n\n"
    "Write two different actions the person in this scenario could take, each one sentence in the first person "
    'starting with "I": one that clearly expresses the value of {value}, and one that clearly goes against it.\n\n'
    'Answer with only a JSON object of the form {{"express": "I ...", "against": "I ..."}}.'
)
STAGE2_PREFIX = '{"express": "I'
MICRO_DEFINITION = "A Schwartz Value Survey item of the basic value {basic}: {definition}"


def stage1_messages(country: str, domain: str, n: int) -> List[Dict[str, str]]:
    return [{"role": "system", "content": STAGE1_SYSTEM},
            {"role": "user", "content": STAGE1_USER.format(n=n, country=country, domain=domain)}]


def stage2_messages(scenario: str, value: str) -> List[Dict[str, str]]:
    if value in MICRO_VALUES:
        basic = MICRO_VALUES[value]
        text = MICRO_DEFINITION.format(basic=basic, definition=definition(basic))
    else:
        text = definition(value)
    return [{"role": "system", "content": STAGE2_SYSTEM},
            {"role": "user", "content": STAGE2_USER.format(scenario=scenario, value=value, definition=text)}]


def prompt_record(prefill: bool) -> Dict[str, str]:
    """The prompt wording, as kept in the item set's metadata."""
    return {"stage1_system": STAGE1_SYSTEM, "stage1_user": STAGE1_USER, "stage1_prefix": STAGE1_PREFIX if prefill else "",
            "stage2_system": STAGE2_SYSTEM, "stage2_user": STAGE2_USER, "stage2_prefix": STAGE2_PREFIX if prefill else "",
            "micro_definition": MICRO_DEFINITION}


# =============================================================================================
# Settings
# =============================================================================================

LENS_COUNTRIES = ("United States", "India", "Pakistan", "Nigeria", "Philippines", "United Kingdom", "Germany", "Uganda",
                  "Canada", "Egypt", "France", "Australia")
LENS_DOMAINS = ("Politics", "Social Networks", "Social Inequality", "Family & Changing Gender Roles", "Work Orientation",
                "Religion", "Environment", "National Identity", "Citizenship", "Leisure Time and Sports",
                "Health and Health Care")


@dataclass
class BuildConfig:
    """Settings of a build. Everything here is kept in the item set's metadata."""

    generator: Optional[str] = None  # Hub id or folder; None: the embedded SmolLM2-135M-Instruct
    countries: List[str] = field(default_factory=lambda: list(LENS_COUNTRIES))
    domains: List[str] = field(default_factory=lambda: list(LENS_DOMAINS))
    values: List[str] = field(default_factory=lambda: list(BASIC_VALUES))  # basic values or survey items
    scenarios_per_pair: int = 2
    seed: int = 0
    temperature: float = 0.8  # 0: greedy (then retries repeat the same answer)
    top_p: float = 0.95
    max_new_tokens_scenarios: int = 384
    max_new_tokens_actions: int = 128
    max_retries: int = 2  # extra attempts after the first
    batch_size: int = 16  # prompts per generate call (also fixes the chunking; part of the settings)
    train_fraction: float = DEFAULT_TRAIN_FRACTION
    dedup_threshold: float = 0.8
    prefill: bool = True  # start the answer with the JSON opening (helps small generators)
    min_scenario_words: int = 6
    max_scenario_words: int = 120
    min_action_words: int = 4
    max_action_words: int = 80
    dtype: Optional[str] = None  # for HFGenerator
    device: Optional[str] = None

    def __post_init__(self):
        self.countries = [str(c).strip() for c in self.countries]
        self.domains = [str(d).strip() for d in self.domains]
        resolved = []
        for v in self.values:
            try:
                basic, micro = resolve_value_pair(v)
            except UnknownValueError as err:
                raise UnknownValueError(f"build setting 'values': {err}") from None
            resolved.append(micro or basic)
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"build values repeat: {resolved}")
        self.values = resolved
        if not self.countries or not self.domains or not self.values:
            raise ValueError("a build needs at least one country, one domain and one value")
        if self.scenarios_per_pair < 1 or self.batch_size < 1 or self.max_retries < 0:
            raise ValueError("scenarios_per_pair and batch_size must be >= 1, max_retries >= 0")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "BuildConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown build setting(s) {unknown}; settings: {', '.join(sorted(known))}")
        return cls(**dict(raw))

    @classmethod
    def from_yaml(cls, path: Union[str, Path]) -> "BuildConfig":
        import yaml

        return cls.from_dict(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def sampling(self) -> Dict[str, Any]:
        return {"do_sample": self.temperature > 0, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens_scenarios": self.max_new_tokens_scenarios,
                "max_new_tokens_actions": self.max_new_tokens_actions}

    def fingerprint(self, scenarios: Optional[Sequence[Mapping]] = None) -> str:
        payload = {k: v for k, v in self.to_dict().items() if k not in ("dtype", "device")}
        payload["prompts"] = prompt_record(self.prefill)
        payload["given_scenarios"] = [dict(s) for s in scenarios] if scenarios is not None else None
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# =============================================================================================
# Generators
# =============================================================================================


class Generator(Protocol):
    name: str

    def generate(self, conversations: Sequence[Sequence[Mapping[str, str]]], *, answer_prefix: str, seed: int,
                 max_new_tokens: int, temperature: float, top_p: float) -> List[str]:
        """One answer per conversation, each starting with ``answer_prefix``."""


class HFGenerator:
    """A Hugging Face causal LM as a generator: chat-templated prompts (:func:`vat_hf.prompts.render_chat`),
    left-padded batches, seeded sampling."""

    def __init__(self, model: Any = None, dtype: Optional[str] = None, device: Optional[str] = None):
        from vat_hf.models import LoadedModel, load_model

        loaded = model if isinstance(model, LoadedModel) else load_model(model, dtype=dtype, device=device)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.name = loaded.name_or_path
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def generate(self, conversations, *, answer_prefix: str, seed: int, max_new_tokens: int, temperature: float,
                 top_p: float) -> List[str]:
        import torch

        from vat_hf.prompts import render_chat

        texts = [render_chat(self.tokenizer, list(c), answer_prefix) for c in conversations]
        device = next(self.model.parameters()).device
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs: Dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        return [answer_prefix + t for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


# =============================================================================================
# Parsing and validation
# =============================================================================================

_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_FIRST_PERSON = re.compile(r"^I\b")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?$")


def parse_scenarios(text: str) -> List[str]:
    """The scenario strings of a stage-1 answer: ``{"scenarios": [...]}``, a bare list, or, for a
    truncated answer, every complete quoted string after ``"scenarios"``. Raises :class:`ParseError`."""
    try:
        obj = parse_structured(text)
    except ParseError:
        obj = None
    if isinstance(obj, dict) and isinstance(key_value(obj, "scenarios"), list):
        obj = key_value(obj, "scenarios")
    if isinstance(obj, list):
        found = [s if isinstance(s, str) else (s.get("scenario") if isinstance(s, dict) else None) for s in obj]
        found = [s for s in found if isinstance(s, str)]
        if found:
            return found
    match = re.search(r"scenarios\W*\[", text or "", re.I)
    if match:
        rest = text[match.end() - 1:]
        strings = [json.loads(f'"{m.group(1)}"') for m in _STRING.finditer(rest.split("]", 1)[0] if "]" in rest else rest)]
        if strings:
            return strings
    raise ParseError(f"no list of scenarios ({excerpt(text)})")


def check_scenario(text: str, cfg: BuildConfig) -> Optional[str]:
    """None when a scenario is usable, else the reason."""
    words = len(text.split())
    if words < cfg.min_scenario_words:
        return f"scenario too short ({words} words)"
    if words > cfg.max_scenario_words:
        return f"scenario too long ({words} words)"
    if not _SENTENCE_END.search(text.strip()):
        return "scenario does not end a sentence (truncated?)"
    return None


def check_action(text: Optional[str], cfg: BuildConfig) -> Optional[str]:
    if not text:
        return "empty action"
    if not _FIRST_PERSON.match(text):
        return f"action is not in the first person ({excerpt(text, 40)})"
    words = len(text.split())
    if words < cfg.min_action_words:
        return f"action too short ({words} words)"
    if words > cfg.max_action_words:
        return f"action too long ({words} words)"
    if not _SENTENCE_END.search(text):
        return "action does not end a sentence (truncated?)"
    return None


def check_action_pair(answer: str, cfg: BuildConfig, others: Sequence[str] = ()) -> Tuple[Optional[Tuple[str, str]], str]:
    """``((express, against), "")`` for a usable stage-2 answer, else ``(None, reason)``.
    ``others``: actions already kept in the scene (a near-duplicate of one is rejected)."""
    express = extract_field(answer, POLARITY_WORDS[1])
    against = extract_field(answer, POLARITY_WORDS[-1])
    if express.value is None:
        return None, f"express: {express.reason}"
    if against.value is None:
        return None, f"against: {against.reason}"
    for name, text in (("express", express.value), ("against", against.value)):
        reason = check_action(text, cfg)
        if reason:
            return None, f"{name}: {reason}"
    if jaccard(tokens(express.value), tokens(against.value)) >= cfg.dedup_threshold:
        return None, "the two actions are near-identical"
    for text in (express.value, against.value):
        for other in others:
            if jaccard(tokens(text), tokens(other)) >= cfg.dedup_threshold:
                return None, f"near-duplicate of another action in the scene ({excerpt(other, 50)})"
    return (express.value, against.value), ""


# =============================================================================================
# The build
# =============================================================================================


def _seed(base: int, *parts: Any) -> int:
    return int(hashlib.sha256(json.dumps([base, *parts]).encode()).hexdigest()[:8], 16)


def _chunks(seq: Sequence[Any], size: int) -> List[Sequence[Any]]:
    return [seq[i:i + size] for i in range(0, len(seq), size)]


@dataclass
class BuildResult:
    dataset: Any  # datasets.Dataset with ITEM_FEATURES
    failures: List[Dict[str, Any]]
    metadata: Dict[str, Any]
    build_dir: Path
    items_path: Path


class Builder:
    """Runs (or resumes) a build in ``build_dir``. See the module docstring."""

    def __init__(self, config: BuildConfig, build_dir: Union[str, Path], generator: Optional[Generator] = None,
                 scenarios: Optional[Sequence[Mapping[str, str]]] = None, progress: bool = True):
        self.cfg = config
        self.dir = Path(build_dir)
        self._generator = generator
        self.given = [{"country": str(s["country"]), "domain": str(s["domain"]), "scenario": " ".join(str(s["scenario"]).split())}
                      for s in scenarios] if scenarios is not None else None
        self.progress = progress

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            self._generator = HFGenerator(self.cfg.generator, dtype=self.cfg.dtype, device=self.cfg.device)
        return self._generator

    # -- bookkeeping --------------------------------------------------------------------------
    def _check_settings(self) -> None:
        path = self.dir / "build.json"
        fingerprint = self.cfg.fingerprint(self.given)
        if path.exists():
            old = read_json(path)
            if old.get("fingerprint") != fingerprint:
                before = old.get("config", {})
                changed = sorted(k for k, v in self.cfg.to_dict().items() if before.get(k) != v)
                raise ValueError(f"{self.dir} holds a build with other settings (changed: {changed or 'prompts or scenarios'}); "
                                 "resume it with the same settings, or use a new build directory")
            return
        write_json(path, {"fingerprint": fingerprint, "config": self.cfg.to_dict(), "given_scenarios": self.given,
                          "prompts": prompt_record(self.cfg.prefill)})

    def _gen(self, conversations, prefix: str, seed: int, max_new_tokens: int) -> List[str]:
        return self.generator.generate(conversations, answer_prefix=prefix, seed=seed, max_new_tokens=max_new_tokens,
                                       temperature=self.cfg.temperature, top_p=self.cfg.top_p)

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="chunk", disable=not self.progress)

    # -- stage 1 ------------------------------------------------------------------------------
    def pairs(self) -> List[Tuple[str, str]]:
        return [(c, d) for c in self.cfg.countries for d in self.cfg.domains]

    @staticmethod
    def pair_key(country: str, domain: str) -> str:
        return f"{slug(country)}--{slug(domain)}"

    def stage1(self) -> None:
        if self.given is not None:
            return
        cfg = self.cfg
        prefix = STAGE1_PREFIX if cfg.prefill else ""
        chunks = _chunks(self.pairs(), cfg.batch_size)
        bar = self._bar(len(chunks), "stage 1: scenarios")
        for chunk_index, chunk in enumerate(chunks):
            if all((self.dir / "stage1" / f"{self.pair_key(*p)}.json").exists() for p in chunk):
                bar.update(1)
                continue
            kept: Dict[Tuple[str, str], List[str]] = {p: [] for p in chunk}
            failures: Dict[Tuple[str, str], List[Dict]] = {p: [] for p in chunk}
            for attempt in range(cfg.max_retries + 1):
                todo = [p for p in chunk if len(kept[p]) < cfg.scenarios_per_pair]
                if not todo:
                    break
                answers = self._gen([stage1_messages(c, d, cfg.scenarios_per_pair) for c, d in todo], prefix,
                                    _seed(cfg.seed, "stage1", chunk_index, attempt), cfg.max_new_tokens_scenarios)
                for pair, answer in zip(todo, answers):
                    base = {"stage": 1, "unit": self.pair_key(*pair), "country": pair[0], "domain": pair[1], "attempt": attempt}
                    try:
                        found = parse_scenarios(answer)
                    except ParseError as err:
                        failures[pair].append({**base, "reason": str(err), "output": excerpt(answer, 300)})
                        continue
                    for text in found:
                        text = " ".join(text.split())
                        reason = check_scenario(text, cfg)
                        if reason is None and any(jaccard(tokens(text), tokens(k)) >= cfg.dedup_threshold for k in kept[pair]):
                            reason = "near-duplicate of another scenario of this country x domain"
                        if reason:
                            failures[pair].append({**base, "reason": reason, "output": excerpt(text, 300)})
                        elif len(kept[pair]) < cfg.scenarios_per_pair:
                            kept[pair].append(text)
            for pair in chunk:
                if len(kept[pair]) < cfg.scenarios_per_pair:
                    failures[pair].append({"stage": 1, "unit": self.pair_key(*pair), "country": pair[0], "domain": pair[1],
                                           "attempt": None, "reason": f"gave up: {len(kept[pair])} of {cfg.scenarios_per_pair} "
                                           f"scenarios after {cfg.max_retries + 1} attempts", "output": ""})
                write_json(self.dir / "stage1" / f"{self.pair_key(*pair)}.json",
                           {"country": pair[0], "domain": pair[1], "scenarios": kept[pair], "failures": failures[pair]})
            bar.update(1)
        bar.close()

    def scenes(self) -> List[Dict[str, str]]:
        """Every scene, in a fixed order: ``scene_id``, ``country``, ``domain``, ``scenario``."""
        out = []
        if self.given is not None:
            counters: Dict[Tuple[str, str], int] = {}
            for s in self.given:
                k = (s["country"], s["domain"])
                counters[k] = counters.get(k, 0) + 1
                out.append({**s, "scene_id": scene_id("gen", *k, f"{counters[k]:02d}")})
            return out
        for country, domain in self.pairs():
            record = read_json(self.dir / "stage1" / f"{self.pair_key(country, domain)}.json")
            for k, text in enumerate(record["scenarios"], start=1):
                out.append({"scene_id": scene_id("gen", country, domain, f"{k:02d}"), "country": country,
                            "domain": domain, "scenario": text})
        return out

    # -- stage 2 ------------------------------------------------------------------------------
    @staticmethod
    def scene_file(scene_id: str) -> str:
        return scene_id.replace("/", "--")

    def stage2(self) -> None:
        cfg = self.cfg
        prefix = STAGE2_PREFIX if cfg.prefill else ""
        scenes = self.scenes()
        per_chunk = max(1, cfg.batch_size // len(cfg.values))
        chunks = _chunks(scenes, per_chunk)
        bar = self._bar(len(chunks), "stage 2: actions")
        for chunk_index, chunk in enumerate(chunks):
            if all((self.dir / "scenes" / f"{self.scene_file(s['scene_id'])}.jsonl").exists() for s in chunk):
                bar.update(1)
                continue
            kept: Dict[Tuple[str, str], Tuple[str, str]] = {}
            failures: Dict[str, List[Dict]] = {s["scene_id"]: [] for s in chunk}
            cells = [(s, v) for s in chunk for v in cfg.values]
            for attempt in range(cfg.max_retries + 1):
                todo = [(s, v) for s, v in cells if (s["scene_id"], v) not in kept]
                if not todo:
                    break
                for batch_index, batch in enumerate(_chunks(todo, cfg.batch_size)):
                    answers = self._gen([stage2_messages(s["scenario"], v) for s, v in batch], prefix,
                                        _seed(cfg.seed, "stage2", chunk_index, attempt, batch_index), cfg.max_new_tokens_actions)
                    for (scene, value), answer in zip(batch, answers):
                        others = [a for (sid, _v), pair in kept.items() if sid == scene["scene_id"] for a in pair]
                        pair, reason = check_action_pair(answer, cfg, others)
                        if pair is None:
                            failures[scene["scene_id"]].append({"stage": 2, "unit": scene["scene_id"], "value": value,
                                                                "attempt": attempt, "reason": reason,
                                                                "output": excerpt(answer, 300)})
                        else:
                            kept[(scene["scene_id"], value)] = pair
            for scene in chunk:
                sid = scene["scene_id"]
                missing = [v for v in cfg.values if (sid, v) not in kept]
                items = []
                if missing:
                    failures[sid].append({"stage": 2, "unit": sid, "value": None, "attempt": None,
                                          "reason": f"scene dropped: no valid action pair for {missing} after "
                                                    f"{cfg.max_retries + 1} attempts", "output": ""})
                else:
                    for v in cfg.values:
                        basic = MICRO_VALUES.get(v, v)
                        micro = v if v in MICRO_VALUES else None
                        for polarity, action in ((1, kept[(sid, v)][0]), (-1, kept[(sid, v)][1])):
                            items.append({"id": item_id(sid, basic, polarity, micro), "scene_id": sid,
                                          "country": scene["country"], "domain": scene["domain"], "scenario": scene["scenario"],
                                          "action": action, "value": basic, "micro_value": micro, "polarity": polarity,
                                          "split": ""})
                # failures first: the scene file marks the scene as finished
                write_json(self.dir / "failures" / f"{self.scene_file(sid)}.json", failures[sid])
                write_jsonl(self.dir / "scenes" / f"{self.scene_file(sid)}.jsonl", items)
            bar.update(1)
        bar.close()

    # -- assembly -----------------------------------------------------------------------------
    def failures(self) -> List[Dict[str, Any]]:
        out: List[Dict[str, Any]] = []
        if self.given is None:
            for c, d in self.pairs():
                out.extend(read_json(self.dir / "stage1" / f"{self.pair_key(c, d)}.json")["failures"])
        for scene in self.scenes():
            path = self.dir / "failures" / f"{self.scene_file(scene['scene_id'])}.json"
            if path.exists():
                out.extend(read_json(path))
        return out

    def generator_name(self) -> str:
        if self._generator is not None:
            return str(getattr(self._generator, "name", type(self._generator).__name__))
        from vat_hf.models import DEFAULT_MODEL

        return str(self.cfg.generator or DEFAULT_MODEL)

    def metadata(self, n_items: int, n_scenes_kept: int, failures: Sequence[Mapping]) -> Dict[str, Any]:
        cfg = self.cfg
        return {
            "construction": "vat-hf two-stage generation: scenarios per country x domain, then per scenario one action "
                            "expressing and one going against each value",
            "generator": self.generator_name(),
            "prompts": prompt_record(cfg.prefill),
            "seed": cfg.seed,
            "sampling": cfg.sampling(),
            "max_retries": cfg.max_retries,
            "batch_size": cfg.batch_size,
            "countries": cfg.countries,
            "domains": cfg.domains,
            "values": cfg.values,
            "scenarios_per_pair": cfg.scenarios_per_pair if self.given is None else None,
            "given_scenarios": len(self.given) if self.given is not None else None,
            "dedup_threshold": cfg.dedup_threshold,
            "train_fraction": cfg.train_fraction,
            "validation": {"scenario_words": [cfg.min_scenario_words, cfg.max_scenario_words],
                           "action_words": [cfg.min_action_words, cfg.max_action_words],
                           "action": "first person ('I ...'), ends a sentence"},
            "stats": {"scenes": len(self.scenes()), "scenes_kept": n_scenes_kept, "items": n_items,
                      "rejected_generations": sum(1 for f in failures if f.get("attempt") is not None),
                      "gave_up": sum(1 for f in failures if f.get("attempt") is None)},
            "build_fingerprint": cfg.fingerprint(self.given),
        }

    def assemble(self) -> BuildResult:
        rows: List[Dict[str, Any]] = []
        for scene in self.scenes():
            rows.extend(read_jsonl(self.dir / "scenes" / f"{self.scene_file(scene['scene_id'])}.jsonl"))
        fill_splits(rows, seed=self.cfg.seed, train_fraction=self.cfg.train_fraction)
        failures = self.failures()
        meta = self.metadata(len(rows), len({r["scene_id"] for r in rows}), failures)
        ds = to_dataset(rows)
        path = save_items(ds, self.dir / "items.jsonl", metadata=meta, failures=failures)  # also sets ds's metadata
        return BuildResult(dataset=ds, failures=failures, metadata=meta, build_dir=self.dir, items_path=path)

    def run(self) -> BuildResult:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._check_settings()
        self.stage1()
        self.stage2()
        result = self.assemble()
        logger.info("build %s: %d items in %d scenes; %d rejected generations", self.dir, len(result.dataset),
                    result.metadata["stats"]["scenes_kept"], result.metadata["stats"]["rejected_generations"])
        return result


def build_items(config: Union[BuildConfig, Mapping[str, Any], str, Path, None], build_dir: Union[str, Path],
                generator: Optional[Generator] = None, scenarios: Optional[Sequence[Mapping[str, str]]] = None,
                progress: bool = True, **overrides: Any) -> BuildResult:
    """Build (or resume building) an item set in ``build_dir``; see the module docstring.

    ``config``: a :class:`BuildConfig`, a dict, a YAML path or None (defaults); ``overrides`` set
    single settings. ``generator``: an object with :meth:`HFGenerator.generate` (default: an
    :class:`HFGenerator` of ``config.generator``). ``scenarios``: give your own scenarios (dicts with
    country, domain, scenario) to skip stage 1.
    """
    if config is None:
        cfg = BuildConfig()
    elif isinstance(config, BuildConfig):
        cfg = config
    elif isinstance(config, (str, Path)):
        cfg = BuildConfig.from_yaml(config)
    else:
        cfg = BuildConfig.from_dict(config)
    if overrides:
        cfg = BuildConfig.from_dict({**cfg.to_dict(), **{k: v for k, v in overrides.items() if v is not None}})
    return Builder(cfg, build_dir, generator=generator, scenarios=scenarios, progress=progress).run()
