"""On-disk cache of judgments, so a killed run restarted with the same command recomputes nothing
it finished.

Layout (one folder per *namespace*: a model, an adapter, a prompt and a scoring setup)::

    <cache_dir>/judgments/<namespace hash>/meta.json      what the namespace is (for people)
    <cache_dir>/judgments/<namespace hash>/part-<r>.jsonl one line per judged item, written by rank r

A line is ``{"key": <sha256>, "item": <item hash>, "out": {...}}``; ``key`` is
``sha256(model fingerprint, adapter fingerprint, prompt fingerprint, scoring fingerprint, item
hash)``.

Two ways to fingerprint a model. An evaluation run (:func:`vat_hf.evaluation.run.run_evaluation`)
fingerprints the *files* it will load (:func:`model_files_fingerprint`,
:func:`adapter_files_fingerprint`: the folder, each weight file's content hash where the Hub
cache names its blob by one, else its size and modification time, the config and the dtype), so
it can tell that every judgment is cached before it loads any weights. A model handed to
:class:`~vat_hf.evaluation.judge.Evaluator` directly may differ from any file (it may be in
training), so the evaluator fingerprints the weights in memory (:func:`model_fingerprint`,
:func:`adapter_fingerprint`). The two never share a namespace. The item hash covers only what the model reads (scenario and action), and ``out`` only
the model's outputs (rating, distribution, ...), so a cached judgment is reused for any item with
the same text and the item's own metadata (id, value, polarity) is always the current one.

Durability: each finished batch is appended with one ``write`` and ``flush`` + ``fsync``, so a
kill loses at most the batch in flight. A torn last line (a kill during the write) is ignored on
read and cut off before the next append. Data-parallel processes each append to their own part
file (``part-<rank>.jsonl``); every part is read.

A cache is input like any other and is validated on load: a line that is not JSON, whose key
does not belong to its item in this namespace, or whose outputs are impossible (a rating off
the scale, a distribution that does not sum to one or disagrees with its rating, ...; see
:func:`outputs_problem`) is ignored with a warning naming the file and line, and its item is
judged again.

Sharing between processes: two evaluations of one model, adapter, prompt and scoring setup (two
``vat-hf eval`` on one ``$VAT_HF_CACHE``, say) share a namespace and may append to the same part
file. Each append, and the cut of a torn last line before it, holds a short lock on that part
file (``part-<r>.jsonl.lock``, :mod:`filelock`), so neither can cut or interleave the other's
lines; both may judge an item neither had cached (the cache then holds it twice, which is
harmless: the outputs are the same and either line serves). ``vat-hf run`` keeps a whole run to
itself with a lock on its ``output_dir`` (:mod:`vat_hf.pipeline`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from vat_hf.errors import disk_full, is_disk_full
from vat_hf.io import to_jsonable, write_json
from vat_hf.prompts import OPTIONS, SCALE_MAX, SCALE_MIN

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(obj), sort_keys=True, default=str).encode()).hexdigest()


def item_hash(item: Mapping) -> str:
    """Hash of the item text the model reads.

    >>> item_hash({"scenario": "S", "action": "A", "id": "x"}) == item_hash({"scenario": "S", "action": "A", "id": "y"})
    True
    """
    return sha256_json({"scenario": item.get("scenario"), "action": item.get("action")})[:32]


def cached_outputs(cache: Optional["JudgmentCache"], items: Iterable[Mapping]) -> Tuple[List[str], List[Optional[Dict]]]:
    """The items' hashes and, in their order, each one's cached outputs or None (without a
    cache: no hashes, and None for every item)."""
    items = list(items)
    if cache is None:
        return [], [None] * len(items)
    hashes = [item_hash(item) for item in items]
    found = cache.lookup(hashes)
    return hashes, [found.get(h) for h in hashes]


def _tensor_sample_digest(tensors: Iterable[Tuple[str, torch.Tensor]], per_tensor: int = 1024) -> str:
    """A cheap digest of weights: name, shape, dtype and ``per_tensor`` strided values of each."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        try:
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // per_tensor)
            sample = flat[::step][:per_tensor].to(device="cpu", dtype=torch.float32)
        except (RuntimeError, NotImplementedError):  # meta / offloaded weights: shape and dtype only
            continue
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()


def _weight_files(path: Path) -> List[Dict]:
    """Each weight file of a folder: name, size and, for a file in the Hub cache (a link to a blob
    named by its content's sha256), that content hash; for any other file its modification time
    (a file rewritten in place changes it)."""
    if not path.is_dir():
        return []
    entries = []
    for p in sorted(path.iterdir()):
        if p.suffix not in WEIGHT_SUFFIXES:
            continue
        real = p.resolve()
        stat = real.stat()
        entry: Dict = {"name": p.name, "bytes": stat.st_size}
        if p.is_symlink() and real.parent.name == "blobs":
            entry["blob"] = real.name
        else:
            entry["mtime_ns"] = stat.st_mtime_ns
        entries.append(entry)
    return entries


def local_folder(name_or_path: Optional[str], revision: Optional[str] = None) -> Optional[Path]:
    """The folder a model or adapter is loaded from without downloading anything: a local folder,
    or a Hub id's snapshot in the local Hub cache; None when it is not on this machine yet."""
    if not name_or_path:
        return None
    path = Path(os.path.expanduser(str(name_or_path)))
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), revision=revision, local_files_only=True)).resolve()
    except Exception:  # not cached (or not a Hub id): the caller loads the model and fingerprints it in memory
        return None


def _config_digest(folder: Path, name: str) -> Optional[str]:
    path = folder / name
    if not path.is_file():
        return None
    config = json.loads(path.read_text(encoding="utf-8"))
    # Bookkeeping keys that do not change the outputs (and that save_pretrained rewrites).
    kept = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")}
    return sha256_json(kept)


def model_files_fingerprint(name_or_path: Optional[str], dtype: str, revision: Optional[str] = None) -> Optional[str]:
    """Identifies a base model by the files it is loaded from and the dtype it is loaded in
    (None when its files are not on this machine)."""
    folder = local_folder(name_or_path, revision)
    if folder is None:
        return None
    return sha256_json({"kind": "files", "folder": str(folder), "weights": _weight_files(folder),
                        "config": _config_digest(folder, "config.json"), "dtype": str(dtype)})[:32]


def adapter_files_fingerprint(adapter: Optional[str]) -> Optional[str]:
    """Identifies a PEFT adapter by its folder's config and weight files; ``""`` for no adapter,
    None when its files are not on this machine."""
    if not adapter:
        return ""
    folder = local_folder(adapter)
    if folder is None:
        return None
    return sha256_json({"kind": "files", "folder": str(folder), "weights": _weight_files(folder),
                        "config": _config_digest(folder, "adapter_config.json")})[:32]


def _peft_adapters_disabled(model) -> bool:
    for module in model.modules():
        flag = getattr(module, "disable_adapters", None)
        if isinstance(flag, bool):
            return flag
    return False


def model_fingerprint(model) -> str:
    """Identifies the base model's weights: its path (with weight files' sizes and mtimes), its
    config, its dtype, and a strided sample of every parameter (which also catches weights changed
    in memory)."""
    from vat_hf.evaluation.prefix import unwrap_model

    base = unwrap_model(model)
    config = getattr(base, "config", None)
    name = str(getattr(config, "_name_or_path", "") or "")
    config_dict = {}
    if config is not None:
        config_dict = {k: v for k, v in config.to_dict().items()
                       if not k.startswith("_") and k not in ("transformers_version", "dtype", "torch_dtype")}
    # Under a PEFT wrapper the base weights keep their values but gain ".base_layer" in their names.
    params = [(n.replace(".base_layer", ""), p) for n, p in base.named_parameters()
              if "lora_" not in n and "modules_to_save" not in n]
    dtype = str(params[0][1].dtype) if params else None
    return sha256_json({
        "name_or_path": name,
        "revision": getattr(config, "_commit_hash", None),
        "weights": _weight_files(Path(name)) if name else [],
        "config": sha256_json(config_dict),
        "dtype": dtype,
        "sample": _tensor_sample_digest(params),
    })[:32]


def adapter_fingerprint(model) -> str:
    """Identifies the active PEFT adapter(s): config and a sample of the adapter's weights. Empty
    for a plain model or while adapters are disabled (``with model.disable_adapter():``)."""
    peft_config = getattr(model, "peft_config", None)
    if not peft_config or _peft_adapters_disabled(model):
        return ""
    active = getattr(model, "active_adapters", None)
    if callable(active):
        active = active()
    if active is None:
        active = [getattr(model, "active_adapter", "default")]
    if isinstance(active, str):
        active = [active]
    configs = {name: peft_config[name].to_dict() for name in active if name in peft_config}
    tensors = [(n, p) for n, p in model.named_parameters() if any(f".{name}." in n or n.endswith(f".{name}") for name in active)]
    return sha256_json({"adapters": sorted(active), "config": configs, "sample": _tensor_sample_digest(tensors)})[:32]


def tokenizer_fingerprint(tokenizer) -> str:
    """The tokenizer's class, vocabulary size and chat template (they decide the token ids)."""
    return sha256_json({
        "class": type(tokenizer).__name__,
        "vocab": len(tokenizer) if hasattr(tokenizer, "__len__") else None,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "probe": tokenizer.encode("Scenario: ÿ 12345 Rating: 3", add_special_tokens=False)
        if hasattr(tokenizer, "encode") else None,
    })[:32]


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def outputs_problem(out) -> Optional[str]:
    """Why a cached ``out`` cannot be a judgment of this evaluator, or None when it can: a
    rating off the scale or not a number, a missing rating without its reason, a distribution
    over the options that is not one (wrong length, negative, not summing to 1) or whose mean
    is not the rating, an option mass outside [0, 1], an argmax that is no option.

    >>> outputs_problem({"rating": 3.0, "probs": [0, 0, 1, 0, 0], "option_mass": 0.9, "argmax": 3, "mode": "logprob"})
    >>> outputs_problem({"rating": 99, "probs": None, "mode": "generate"})
    'rating 99 is outside the scale [1, 5]'
    >>> outputs_problem({"rating": 4.0, "probs": [0, 0, 1, 0, 0], "mode": "logprob"})
    'rating 4.0 is not the mean of its distribution (3)'
    """
    if not isinstance(out, Mapping):
        return f"the outputs are a {type(out).__name__}, not a mapping"
    if not isinstance(out.get("mode"), str):
        return "no scoring mode"
    rating = out.get("rating")
    if rating is None:
        if not isinstance(out.get("missing_reason"), str) or not out["missing_reason"]:
            return "no rating and no reason why"
    elif not _number(rating):
        return f"rating {rating!r} is not a number"
    elif not SCALE_MIN <= rating <= SCALE_MAX:
        return f"rating {rating!r} is outside the scale [{SCALE_MIN}, {SCALE_MAX}]"
    probs = out.get("probs")
    if probs is not None:
        if not isinstance(probs, list) or len(probs) != len(OPTIONS):
            return f"probs is not a list of {len(OPTIONS)} probabilities"
        if rating is not None:  # a missing rating carries NaN probabilities (None in JSON)
            if not all(_number(p) and -1e-9 <= p <= 1 + 1e-9 for p in probs):
                return "probs holds a value that is not a probability"
            if abs(sum(probs) - 1.0) > 1e-4:
                return f"probs sums to {sum(probs):.6g}, not 1"
            mean = sum((SCALE_MIN + k) * p for k, p in enumerate(probs))
            if abs(mean - rating) > 1e-4:
                return f"rating {rating!r} is not the mean of its distribution ({mean:.6g})"
    mass = out.get("option_mass")
    if mass is not None and not (_number(mass) and -1e-9 <= mass <= 1 + 1e-6):
        return f"option_mass {mass!r} is not within [0, 1]"
    argmax = out.get("argmax")
    if argmax is not None and (not _number(argmax) or argmax not in range(SCALE_MIN, SCALE_MAX + 1)):
        return f"argmax {argmax!r} is not an option"
    return None


def _finite(out: Mapping) -> Dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


class JudgmentCache:
    """Append-only JSONL store of judgments under ``root`` (see the module docstring)."""

    def __init__(self, root, model_fp: str, adapter_fp: str, prompt_fp: str, scoring_fp: str, rank: int = 0,
                 meta: Optional[Mapping] = None):
        self.fingerprints = {"model": model_fp, "adapter": adapter_fp, "prompt": prompt_fp, "scoring": scoring_fp}
        self.namespace = sha256_json(self.fingerprints)[:24]
        self.dir = Path(root) / "judgments" / self.namespace
        self.rank = rank
        self.part = self.dir / f"part-{rank}.jsonl"
        self._meta = {"format": CACHE_FORMAT, "fingerprints": self.fingerprints, **dict(meta or {})}
        self._entries: Optional[Dict[str, Dict]] = None
        self._prepared = False

    def key(self, item_h: str) -> str:
        return hashlib.sha256("|".join([*self.fingerprints.values(), item_h]).encode()).hexdigest()

    # -- reading --------------------------------------------------------------------------------
    def load(self) -> Dict[str, Dict]:
        """Every complete, valid entry of every part file, by key (re-read on each call). An
        invalid line is reported (file and line) unless a valid line for its key supersedes it."""
        entries: Dict[str, Dict] = {}
        rejected: List[Tuple[Path, int, Optional[str], str]] = []
        if self.dir.exists():
            for part in sorted(self.dir.glob("part-*.jsonl")):
                entries.update(self._read_part(part, rejected))
        for path, number, key, why in rejected:
            if key is None or key not in entries:
                logger.warning("%s:%d: ignoring a cache line (%s); its item is judged again", path, number, why)
        self._entries = entries
        return entries

    def _read_part(self, path: Path, rejected: List) -> Dict[str, Dict]:
        entries: Dict[str, Dict] = {}
        with open(path, "rb") as handle:
            data = handle.read()
        lines = data.split(b"\n")
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
                key, item_h, out = entry["key"], entry["item"], entry["out"]
            except (ValueError, KeyError, TypeError):
                # Only the last line can be torn by a kill; anything else is reported.
                if number < len(lines) - 1 or data.endswith(b"\n"):
                    rejected.append((path, number, None, "not a cache entry: unreadable JSON or missing fields"))
                continue
            if not isinstance(key, str) or not isinstance(item_h, str) or key != self.key(item_h):
                rejected.append((path, number, None, "its key does not belong to its item in this namespace"))
                continue
            problem = outputs_problem(out)
            if problem is not None:
                rejected.append((path, number, key, problem))
                continue
            entries[key] = out
        return entries

    def lookup(self, item_hashes: Iterable[str]) -> Dict[str, Dict]:
        """Cached outputs of the given item hashes (item hash -> out)."""
        entries = self.load() if self._entries is None else self._entries
        found = {}
        for h in item_hashes:
            out = entries.get(self.key(h))
            if out is not None:
                found[h] = out
        return found

    # -- writing --------------------------------------------------------------------------------
    def _lock(self):
        """The short lock that serialises appends (and torn-line cuts) to this part file
        between processes sharing the namespace (see the module docstring)."""
        from filelock import FileLock

        return FileLock(str(self.part) + ".lock")

    def _prepare(self) -> None:
        """Create the namespace folder and its meta.json; called with the part file's lock held."""
        if self._prepared:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "meta.json").exists():
            try:
                write_json(self.dir / "meta.json", self._meta)
            except OSError as err:  # another process may be writing it at the same moment
                if is_disk_full(err):
                    raise disk_full(self.dir / "meta.json", err) from err
        self._cut_torn_line()
        self._prepared = True

    def _cut_torn_line(self) -> None:
        """Cut a torn last line (no trailing newline) so the next append starts a fresh line.
        Reads only the file's tail: it runs before every append."""
        if not self.part.exists():
            return
        with open(self.part, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            cut, end = 0, size
            while end > 0:  # back to the last newline, a block at a time
                start = max(0, end - 65536)
                handle.seek(start)
                block = handle.read(end - start)
                at = block.rfind(b"\n")
                if at >= 0:
                    cut = start + at + 1
                    break
                end = start
            handle.seek(cut)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
            logger.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", self.part, size - cut)

    def append(self, pairs: Iterable[Tuple[str, Mapping]]) -> int:
        """Durably append ``(item hash, out)`` pairs as one write; returns how many."""
        lines = []
        for h, out in pairs:
            key = self.key(h)
            entry = {"key": key, "item": h, "out": _finite(to_jsonable(out))}
            lines.append(json.dumps(entry, ensure_ascii=False, allow_nan=False))
            if self._entries is not None:
                self._entries[key] = entry["out"]
        if not lines:
            return 0
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock():
                if self._prepared:
                    # Another process's write may have been torn since (killed mid-append).
                    self._cut_torn_line()
                self._prepare()
                fd = os.open(self.part, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    view = memoryview(payload)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    os.fsync(fd)
                except OSError:
                    # A partial write (a full disk) leaves a torn last line: cut it now rather than
                    # leave it to the next run (the lines before it are whole).
                    os.close(fd)
                    fd = -1
                    self._cut_torn_line()
                    raise
                finally:
                    if fd >= 0:
                        os.close(fd)
        except OSError as err:
            if is_disk_full(err):
                raise disk_full(self.part, err) from err
            raise
        return len(lines)


def default_cache_root() -> Path:
    from vat_hf.models.loading import cache_dir

    return cache_dir()
