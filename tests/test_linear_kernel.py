"""The CPU kernel of the float32 linear layers: oneDNN routing gives torch's products up to
float32 rounding, is undone after judging, never touches training, and ``auto`` follows the
one-time timing."""

import pytest
import torch

from vat_hf.evaluation import Evaluator
from vat_hf.evaluation import linear_kernel as lk
from vat_hf.evaluation.linear_kernel import choose_linear_kernel, cpu_float32_linears, linears_on, onednn_linear

needs_onednn = pytest.mark.skipif(not lk.onednn_available(), reason="this torch has no oneDNN linear operator")

ITEMS = [{"id": f"i{k}", "scenario": f"A neighbour asks for help with task number {k}.",
          "action": "They help at once." if k % 2 else "They refuse and walk away."} for k in range(6)]


@pytest.fixture
def count_onednn_calls(monkeypatch):
    calls = []
    real = lk._ONEDNN_LINEAR

    def counting(*args):
        calls.append(args[1].shape)
        return real(*args)

    monkeypatch.setattr(lk, "_ONEDNN_LINEAR", counting)
    return calls


@needs_onednn
def test_onednn_linear_equals_torch_linear_to_float32_rounding():
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(96, 80)
    x = torch.randn((2, 7, 96), generator=generator)
    with torch.inference_mode():
        expected = layer(x)
        got = onednn_linear(x, layer.weight, layer.bias)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


@needs_onednn
def test_linears_on_routes_every_float32_linear_and_restores_them(tiny_model, count_onednn_calls):
    model = tiny_model.model
    layers = cpu_float32_linears(model)
    assert len(layers) == 2 * 7 + 1  # two decoder layers' q, k, v, o, gate, up, down and the head
    ids = torch.tensor([[1, 2, 3, 4]])
    with linears_on(model, "onednn"):
        with torch.inference_mode():
            model(input_ids=ids)
        assert len(count_onednn_calls) == len(layers)
        # With gradients on (training), the layers keep their own forward: oneDNN's operator has
        # no backward.
        model(input_ids=ids).logits.sum().backward()
        assert len(count_onednn_calls) == len(layers)
        model.zero_grad(set_to_none=True)
    assert all("forward" not in layer.__dict__ for layer in layers)
    with torch.inference_mode():
        model(input_ids=ids)
    assert len(count_onednn_calls) == len(layers)


@needs_onednn
def test_judgments_through_onednn_equal_torch_kernel_judgments(sharp_model, count_onednn_calls):
    by_kernel = {}
    for kernel in ("torch", "onednn"):
        evaluator = Evaluator(sharp_model.model, sharp_model.tokenizer, progress=False, linear_kernel=kernel)
        by_kernel[kernel] = evaluator.judge(ITEMS)
        assert evaluator.stats.linear_kernel == kernel
        assert bool(count_onednn_calls) == (kernel == "onednn")
    torch_records, onednn_records = by_kernel["torch"], by_kernel["onednn"]
    assert [r["argmax"] for r in onednn_records] == [r["argmax"] for r in torch_records]
    for a, b in zip(torch_records, onednn_records):
        assert b["probs"] == pytest.approx(a["probs"], abs=1e-5)
    # The comparison has something to compare: the sharp model's judgments differ by item.
    assert max(r["probs"][0] for r in torch_records) - min(r["probs"][0] for r in torch_records) > 1e-3


def test_evaluators_of_one_model_share_the_kernel_choice(tiny_model, monkeypatch):
    """``auto`` times the kernels once per model in a process: two evaluators of one model (a
    baseline and its zero-strength steered run, say) must not get two kernels from two noisy
    timings, since the kernels round differently (about 1e-8 on the sharp model's probabilities)."""
    import weakref

    monkeypatch.setattr(lk, "_CHOSEN", weakref.WeakKeyDictionary())
    monkeypatch.setattr(lk, "onednn_available", lambda: True)
    timings = iter([1.05, 1.8])  # the second timing alone would pick oneDNN
    calls = []

    def compare(layer):
        calls.append(layer)
        return {"torch_s": 1.0, "onednn_s": 1.0, "max_rel_diff": 1e-7, "speedup": next(timings)}

    monkeypatch.setattr(lk, "compare_kernels", compare)
    chosen = []
    for _ in range(2):
        evaluator = Evaluator(tiny_model.model, tiny_model.tokenizer, progress=False)
        chosen.append(evaluator.linear_kernel_choice()["kernel"])
    assert chosen == ["torch", "torch"] and len(calls) == 1
    # Another request is decided on its own.
    assert Evaluator(tiny_model.model, tiny_model.tokenizer, progress=False,
                     linear_kernel="onednn").linear_kernel_choice()["kernel"] == "onednn"
    assert len(calls) == 2


def test_auto_follows_the_timing_and_the_products(tiny_model, monkeypatch):
    model = tiny_model.model
    monkeypatch.setattr(lk, "onednn_available", lambda: True)
    probe = {"torch_s": 1.0, "onednn_s": 1.0, "max_rel_diff": 1e-7}
    for speedup, kernel in ((1.05, "torch"), (1.8, "onednn")):
        monkeypatch.setattr(lk, "compare_kernels", lambda layer: {**probe, "speedup": speedup})
        assert choose_linear_kernel(model, "auto")["kernel"] == kernel
    monkeypatch.setattr(lk, "compare_kernels", lambda layer: {**probe, "speedup": 2.0, "max_rel_diff": 3e-3})
    choice = choose_linear_kernel(model, "onednn")
    assert choice["kernel"] == "torch" and "differ" in choice["reason"]
    assert choose_linear_kernel(model, "torch") == {"kernel": "torch", "reason": "requested"}
    monkeypatch.setattr(lk, "onednn_available", lambda: False)
    assert choose_linear_kernel(model, "onednn")["kernel"] == "torch"
    with pytest.raises(ValueError, match="linear_kernel 'fast'"):
        Evaluator(model, tiny_model.tokenizer, progress=False, linear_kernel="fast")
