"""Which CPU kernel runs the model's float32 linear layers while judging.

The linear layers are about 80% of judging time on a CPU (issue 16's profiles). PyTorch sends
float32 ``nn.Linear`` on x86 to MKL's SGEMM, and MKL takes a slower code path on some x86 CPUs
than on others: on a 2-core AMD EPYC with AVX-512 (2026-12-02) MKL ran SmolLM2's layer shapes
at 76-91 GFLOP/s and oneDNN, which PyTorch also ships and which vLLM's CPU backend uses for the
same reason, at 150-210 GFLOP/s; on an Intel Xeon MKL runs near the core's peak. So the
evaluator does not assume: with ``linear_kernel="auto"`` it times both kernels once on the
model's commonest layer shape and routes the layers through oneDNN only where that is clearly
faster and gives the same products up to float32 rounding. Both compute the same float32
products in another order (relative differences about 1e-6, like a change of batch shape).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections import Counter
from typing import List, Optional

import torch

LINEAR_KERNELS = ("auto", "onednn", "torch")
"""``linear_kernel`` values: decide by timing, always oneDNN (where it can run), never."""

ONEDNN_MIN_SPEEDUP = 1.15
"""``auto`` picks oneDNN only when it is at least this much faster, so that timing noise on a
machine where both kernels run at the same speed never flips the choice."""

SAME_PRODUCTS_RTOL = 1e-4
"""Largest relative difference (to the output's largest magnitude) accepted between the kernels:
float32 rounding of a reordered sum is about 1e-6; anything near 1e-3 would be reduced precision."""

_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def check_linear_kernel(value: str) -> str:
    """``value`` if it is one of :data:`LINEAR_KERNELS`, else a ValueError naming them."""
    if value not in LINEAR_KERNELS:
        raise ValueError(f"linear_kernel {value!r} is not one of {LINEAR_KERNELS}")
    return value


def onednn_available() -> bool:
    """Whether this torch has oneDNN's CPU linear operator (the one inductor uses on CPU)."""
    return _ONEDNN_LINEAR is not None and torch.backends.mkldnn.is_available()


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed by oneDNN (no autograd: inference only)."""
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


def cpu_float32_linears(model) -> List[torch.nn.Linear]:
    """The plain ``nn.Linear`` layers of ``model`` with float32 weights on the CPU (inside PEFT
    adapters too: a LoRA layer's base layer and its A/B matrices are plain linears) that
    :func:`linears_on` can route: not those that already carry their own instance ``forward``
    (accelerate's hooks), so that the kernel chosen for a model is the one its layers run."""
    return [m for m in model.modules() if type(m) is torch.nn.Linear and "forward" not in m.__dict__
            and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32 and m.weight.layout == torch.strided]


def _best_seconds(fn, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def compare_kernels(layer: torch.nn.Linear, rows: int = 256, seed: int = 0) -> dict:
    """Time both kernels on ``layer``'s shape with ``rows`` input rows and compare their products.
    Returns ``{"torch_s", "onednn_s", "speedup", "max_rel_diff"}``."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((rows, layer.in_features), generator=generator)
    with torch.inference_mode():
        reference = torch.nn.functional.linear(x, layer.weight, layer.bias)
        candidate = onednn_linear(x, layer.weight, layer.bias)
        diff = float((candidate - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
        torch_s = _best_seconds(lambda: torch.nn.functional.linear(x, layer.weight, layer.bias))
        onednn_s = _best_seconds(lambda: onednn_linear(x, layer.weight, layer.bias))
    return {"torch_s": torch_s, "onednn_s": onednn_s, "speedup": torch_s / onednn_s, "max_rel_diff": diff}


def choose_linear_kernel(model, requested: str = "auto") -> dict:
    """The kernel for ``model``'s float32 CPU linears: ``{"kernel": "onednn" | "torch", "reason":
    ...}`` plus the timing of :func:`compare_kernels` where it ran."""
    if check_linear_kernel(requested) == "torch":
        return {"kernel": "torch", "reason": "requested"}
    layers = cpu_float32_linears(model)
    if not layers:
        return {"kernel": "torch", "reason": "no float32 linear layers on the CPU"}
    if not onednn_available():
        return {"kernel": "torch", "reason": "this torch has no oneDNN linear operator"}
    # The commonest layer shape (a decoder layer's projection), not the vocabulary head: the
    # head is one layer of many and would make the timing itself cost seconds.
    shapes = Counter(tuple(m.weight.shape) for m in layers)
    shape = max(shapes, key=lambda s: (shapes[s], s[0] * s[1]))
    probe = compare_kernels(next(m for m in layers if tuple(m.weight.shape) == shape))
    if probe["max_rel_diff"] > SAME_PRODUCTS_RTOL:
        return {"kernel": "torch", "reason": f"oneDNN's products differ by {probe['max_rel_diff']:.1e}", **probe}
    if requested == "onednn":
        return {"kernel": "onednn", "reason": "requested", **probe}
    if probe["speedup"] >= ONEDNN_MIN_SPEEDUP:
        return {"kernel": "onednn", "reason": f"{probe['speedup']:.2f}x faster than torch's kernel here", **probe}
    return {"kernel": "torch", "reason": f"oneDNN only {probe['speedup']:.2f}x as fast here", **probe}


_CHOSEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def chosen_linear_kernel(model, requested: str = "auto") -> dict:
    """:func:`choose_linear_kernel` once per model (and request) in a process. ``auto`` decides by
    a timing, and where the kernels run near ``ONEDNN_MIN_SPEEDUP`` apart two timings can
    disagree; every evaluator of one model (a baseline and its steered run, the same model
    judged twice) then uses the same kernel, so their numbers agree to the last bit."""
    key = (requested, tuple((tuple(m.weight.shape), str(m.weight.device)) for m in cpu_float32_linears(model)))
    per_model = _CHOSEN.setdefault(model, {})
    if key not in per_model:
        per_model[key] = choose_linear_kernel(model, requested)
    return dict(per_model[key])


@contextlib.contextmanager
def linears_on(model, kernel: str):
    """Inside the block, ``model``'s float32 CPU linears run on ``kernel`` (``"onednn"`` or
    ``"torch"``, their own forward). With gradients enabled a layer keeps its own forward (the
    oneDNN operator has no backward), so this never touches training."""
    if kernel != "onednn":
        yield
        return
    patched = []

    def routed(layer):
        own = layer.forward

        def forward(x):
            if torch.is_grad_enabled() or x.dtype != torch.float32:
                return own(x)
            return onednn_linear(x, layer.weight, layer.bias)

        return forward

    try:
        for layer in cpu_float32_linears(model):
            layer.forward = routed(layer)
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.forward
