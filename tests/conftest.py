from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LENS_CSV = SHARED / "data" / "value-action-lens" / "value_action_gap_full_data_generation.csv"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer, saved once per test session."""
    from vat_hf.testing import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from vat_hf.models import load_model

    return load_model(str(tiny_model_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def sharp_model(tiny_model_dir):
    """The tiny model with weights scaled up, so attention patterns and positions change the
    output distribution visibly (a random model at initial scale is almost uniform)."""
    import torch

    from vat_hf.models import load_model

    loaded = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.mul_(4.0)
    return loaded


@pytest.fixture
def lens_csv():
    if not LENS_CSV.exists():
        pytest.skip(f"the ValueActionLens corpus is not at {LENS_CSV} (it lives in ../shared beside the repo)")
    return LENS_CSV


@pytest.fixture
def forbid_loading(monkeypatch):
    """``forbid_loading()`` makes any later load of model weights, or any judging, fail the test
    (for reruns that must be served from the judgment cache)."""

    def forbid():
        def fail(*args, **kwargs):
            pytest.fail("loaded weights or judged although every judgment was cached")

        monkeypatch.setattr("vat_hf.models.load_model", fail)
        monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", fail)
        monkeypatch.setattr("vat_hf.evaluation.judge.Evaluator.judge", fail)

    return forbid
