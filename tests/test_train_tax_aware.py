"""Issue: gain–tax trajectories during training and tax-aware DPO, on a tiny random model."""

from pathlib import Path

import pytest
import torch

from vat_hf.io import read_jsonl
from vat_hf.train.config import parse_training_args

from test_train import tiny_recipe


def _train(method, recipe, **flags):
    from vat_hf.train.common import build_trainer

    args = ["--config", str(recipe)] + [x for k, v in flags.items() for x in (f"--{k}", str(v))]
    trainer, info = build_trainer(method, *parse_training_args(method, args))
    trainer.train()
    return trainer, info


def test_trajectory_logs_at_the_right_steps_and_equals_a_checkpoint_evaluation(tmp_path, tiny_model_dir):
    from peft import PeftModel

    from vat_hf.evaluation import Evaluator
    from vat_hf.models import load_model
    from vat_hf.train.common import trajectory_of

    out = tmp_path / "out"
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_model_dir, output_dir=str(out), max_steps=4, save_strategy="steps",
                         save_steps=2, learning_rate=5e-2)
    trainer, _ = _train("dpo", recipe, trajectory_every_n_steps=2, trajectory_n_items=40, trajectory_n_bootstrap=20)
    callback = trajectory_of(trainer)
    rows = read_jsonl(out / "trajectory.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4] and sorted(callback.judgments) == [0, 2, 4]
    assert rows[0]["gain"] == 0 and all(d == 0 for d in rows[0]["drift"].values())
    logged = [h for h in trainer.state.log_history if "vat/gain" in h]
    assert [h["step"] for h in logged] == [0, 2, 4]
    assert logged[-1]["vat/gain"] == pytest.approx(rows[-1]["gain"])
    assert {f"vat/drift/{v}" for v in rows[-1]["drift"]} <= set(logged[-1])
    # The step-2 judgments are the ones a separate evaluation of the step-2 checkpoint gives.
    base = load_model(str(tiny_model_dir), device="cpu")
    at_2 = PeftModel.from_pretrained(base.model, str(out / "checkpoint-2"))
    again = Evaluator(at_2, base.tokenizer, progress=False).judge(callback.items)
    assert [r["rating"] for r in again] == pytest.approx([r["rating"] for r in callback.judgments[2]], abs=1e-5)
    assert [r["rating"] for r in callback.judgments[4]] != pytest.approx([r["rating"] for r in callback.judgments[2]], abs=1e-6)


def test_tax_aware_weight_zero_reproduces_plain_dpo_and_a_weight_adds_anchor_pairs(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_model_dir, output_dir=str(tmp_path / "a"), max_scenes=3)
    plain, plain_info = _train("dpo", recipe)
    off, off_info = _train("dpo", recipe, output_dir=tmp_path / "b", tax_aware_weight=0.0)
    assert off_info == plain_info and "tax_aware" not in off_info
    for (name, p), (_, q) in zip(plain.model.named_parameters(), off.model.named_parameters()):
        assert torch.equal(p, q), name
    on, on_info = _train("dpo", recipe, output_dir=tmp_path / "c", tax_aware_weight=2.0)
    tax = on_info["tax_aware"]
    assert tax["n_target_pairs"] == plain_info["n_examples"] == 3
    assert tax["n_anchor_pairs"] == 6 and len(on.train_dataset) == 9
    assert "Benevolence" not in tax["anchor_values"]
    lora = {n: p for n, p in on.model.named_parameters() if "lora_" in n}
    assert any(not torch.equal(lora[n], p) for n, p in plain.model.named_parameters() if n in lora)
