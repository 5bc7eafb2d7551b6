"""SFT/DPO on a tiny random model: recipe parsing, early errors, real TRL steps, resume, and
`vat-hf run` with trained adapters evaluated by switching on one base model."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from vat_hf.interventions import train_intervention
from vat_hf.io import read_jsonl
from vat_hf.train import read_training_info
from vat_hf.train.config import TrainingConfigError, parse_training_args, parse_training_config

REPO = Path(__file__).resolve().parents[1]
TINY = dict(target_value="Benevolence", use_cpu=True, bf16=False, activation_checkpointing=False, use_peft=True,
            lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules="all-linear", max_steps=2,
            per_device_train_batch_size=2, learning_rate=1e-2, logging_steps=1, save_strategy="no", report_to="none",
            max_scenes=2, seed=0, disable_tqdm=True)


def tiny_recipe(path: Path, model_dir=None, **keys) -> Path:
    config = {**TINY, **keys}
    if model_dir is not None:
        config["model_name_or_path"] = str(model_dir)
    path.write_text(yaml.safe_dump(config))
    return path


def test_recipes_parse_and_flags_override(tmp_path):
    recipes = sorted(REPO.glob("recipes/*/[sd][fp][to]/config_*.yaml"))
    assert {p.parts[-3] for p in recipes} >= {"SmolLM2-135M-Instruct", "Qwen2.5-7B-Instruct", "Llama-3.1-8B-Instruct"}
    for recipe in recipes:
        method = recipe.parent.name
        # use_cpu: GPU recipes ask for bf16, which TrainingArguments checks against the hardware.
        script, training, model = parse_training_args(method, ["--config", str(recipe), "--use_cpu", "true",
                                                               "--output_dir", str(tmp_path)])
        assert script.target_value == "Benevolence" and model.model_name_or_path, recipe
    demo = REPO / "recipes/SmolLM2-135M-Instruct/dpo/config_demo.yaml"
    script, training, model = parse_training_args("dpo", ["--config", str(demo), "--learning_rate", "3e-4", "--lora_target_modules",
                                                          "q_proj", "v_proj", "--target_value", "power", "--resume"])
    assert (training.learning_rate, model.lora_target_modules, script.target_value, script.resume) == (3e-4, ["q_proj", "v_proj"], "Power", True)
    assert training.beta == 0.1 and training.max_steps == yaml.safe_load(demo.read_text())["max_steps"]  # the file still counts


def test_a_recipe_mapping_parses_in_memory_exactly_as_its_file(tmp_path):
    """`vat-hf run` parses an intervention's resolved recipe as a mapping, with no file in
    between: every recipe gives the same three dataclasses either way."""
    for recipe in sorted(REPO.glob("recipes/*/[sd][fp][to]/config_*.yaml")):
        method = recipe.parent.name
        flags = ["--use_cpu", "true", "--output_dir", str(tmp_path)]
        from_file = parse_training_args(method, ["--config", str(recipe), *flags])
        in_memory = parse_training_config(method, yaml.safe_load(recipe.read_text()), flags)
        for a, b in zip(from_file, in_memory):
            assert type(a) is type(b) and a.to_dict() == b.to_dict() if hasattr(a, "to_dict") else a == b, recipe
    with pytest.raises(TrainingConfigError, match=r"intervention 'x': unknown key\(s\) 'lerning_rate'"):
        parse_training_config("sft", {"target_value": "Power", "lerning_rate": 1.0}, where="intervention 'x'")


def test_recipes_keep_working_with_a_transformers_that_knows_only_gradient_checkpointing():
    """The recipes spell transformers 5.23's activation_checkpointing; where TrainingArguments has
    only the earlier gradient_checkpointing (5.17 on the lent H200's image), recipe keys and
    flags are renamed to it instead of refused as unknown. (The whole DPO path under 5.17 ran on
    the H200 and in a CPU environment built like its image.)"""
    from dataclasses import dataclass
    from typing import Optional

    from transformers import HfArgumentParser

    from vat_hf.train.config import _to_known_names

    @dataclass
    class EarlierArguments:
        gradient_checkpointing: bool = False
        gradient_checkpointing_kwargs: Optional[str] = None

    earlier = HfArgumentParser(EarlierArguments)
    config, args = _to_known_names(earlier, {"activation_checkpointing": True, "learning_rate": 1e-4},
                                   ["--activation_checkpointing", "false", "--activation_checkpointing_kwargs={}",
                                    "--beta", "0.1"])
    assert config == {"gradient_checkpointing": True, "learning_rate": 1e-4}
    assert args == ["--gradient_checkpointing", "false", "--gradient_checkpointing_kwargs={}", "--beta", "0.1"]
    parsed, = earlier.parse_args_into_dataclasses(args=args[:3])
    assert parsed.gradient_checkpointing is False and parsed.gradient_checkpointing_kwargs == "{}"
    # The training card records it under today's name either way.
    from types import SimpleNamespace

    from vat_hf.train.common import hyperparameters

    hp = hyperparameters(SimpleNamespace(gradient_checkpointing=True, per_device_train_batch_size=2,
                                         gradient_accumulation_steps=1), SimpleNamespace())
    assert hp["activation_checkpointing"] is True and "gradient_checkpointing" not in hp
    # This environment's transformers knows the current names: nothing is renamed.
    from vat_hf.train.config import make_parser

    current = make_parser("dpo")
    assert _to_known_names(current, {"activation_checkpointing": True}, ["--activation_checkpointing=true"]) == (
        {"activation_checkpointing": True}, ["--activation_checkpointing=true"])


def test_bad_inputs_fail_before_any_model_is_loaded(tmp_path, tiny_model_dir, monkeypatch):
    from vat_hf.train.common import run_training
    from vat_hf.train.data import TrainingDataError
    from vat_hf.values import UnknownValueError

    monkeypatch.setattr("vat_hf.train.common.load_base_model", lambda *a, **k: pytest.fail("loaded a model"))
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_model_dir, output_dir=str(tmp_path / "out"))
    with pytest.raises(TrainingConfigError, match=r"unknown key\(s\) 'lerning_rate' \(did you mean learning_rate"):
        parse_training_args("sft", ["--config", str(tiny_recipe(tmp_path / "bad.yaml", tiny_model_dir, lerning_rate=1e-4))])
    with pytest.raises(TrainingConfigError, match="command line: unknown key"):
        parse_training_args("dpo", ["--config", str(recipe), "--learning_rat", "1e-4"])
    with pytest.raises(UnknownValueError, match="valid names"):
        parse_training_args("sft", ["--config", str(recipe), "--target_value", "Kindness"])
    missing = parse_training_args("sft", ["--config", str(recipe), "--model_name_or_path", str(tmp_path / "nope")])
    with pytest.raises(TrainingConfigError, match="does not exist"):
        run_training("sft", *missing)
    test_only = tmp_path / "test_only.jsonl"
    from vat_hf.data.builtin import load_builtin

    test_only.write_text("".join(json.dumps(i) + "\n" for i in load_builtin("test")[:20]))
    with pytest.raises(TrainingDataError, match="no 'train' items"):
        run_training("dpo", *parse_training_args("dpo", ["--config", str(recipe), "--data_source", str(test_only)]))
    with pytest.raises(TrainingDataError, match="not in the 'train' split"):
        run_training("sft", *parse_training_args("sft", ["--config", str(recipe)]), items=load_builtin("test"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_two_trl_steps_change_the_adapter_and_nothing_else(method, tmp_path, tiny_model_dir):
    from vat_hf.train.common import build_trainer

    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_model_dir, output_dir=str(tmp_path / "out"))
    trainer, _ = build_trainer(method, *parse_training_args(method, ["--config", str(recipe)]))
    # What TRL trains on went through the chat template (user turn, then the assistant's action).
    row = trainer.train_dataset[0]
    text = trainer.processing_class.decode(row["input_ids"] if method == "sft" else row["prompt_ids"] + row["chosen_ids"])
    assert "<|im_start|>user\nScenario: " in text and "<|im_start|>assistant\nI " in text
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.state.global_step == 2
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed and all("lora_" in name for name in changed), sorted(changed)[:5]
    assert any("lora_B" in name for name in changed)  # lora_B starts at zero: the adapter now does something


def _interrupted_at(monkeypatch, step: int):
    """Make the next run_training stop (as a kill would) when step ``step + 1`` begins, after
    checkpoint-``step`` was written and recorded."""
    from transformers import TrainerCallback

    import vat_hf.train.common as common

    class Interrupt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise KeyboardInterrupt

    build = common.build_trainer

    def build_and_interrupt(*args, **kwargs):
        trainer, info = build(*args, **kwargs)
        trainer.add_callback(Interrupt())
        monkeypatch.setattr(common, "build_trainer", build)  # only this once
        return trainer, info

    monkeypatch.setattr(common, "build_trainer", build_and_interrupt)


def test_interrupted_run_resumes_and_reports_the_loss_of_every_step(tmp_path, tiny_model_dir, monkeypatch):
    """A resumed run equals an uninterrupted one: same adapter weights, and a train_loss over all
    steps (the trainer's own covers only the resumed ones)."""
    from safetensors.torch import load_file

    from vat_hf.train.common import CHECKPOINT_RECORD, run_training

    keys = dict(save_strategy="steps", save_steps=2, max_steps=4, learning_rate=1e-2)
    whole = tmp_path / "whole"
    run_training("sft", *parse_training_args("sft", ["--config", str(tiny_recipe(tmp_path / "w.yaml", tiny_model_dir,
                                                                                 output_dir=str(whole), **keys))]))
    out = tmp_path / "out"
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_model_dir, output_dir=str(out), **keys)
    _interrupted_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_training("sft", *parse_training_args("sft", ["--config", str(recipe)]))
    assert (out / "checkpoint-2" / CHECKPOINT_RECORD).is_file() and read_training_info(out) is None
    run_training("sft", *parse_training_args("sft", ["--config", str(recipe), "--resume"]))
    info, reference = read_training_info(out), read_training_info(whole)
    assert info["resumed_from"].endswith("checkpoint-2") and info["train_metrics"]["global_step"] == 4
    assert info["fingerprint"] == reference["fingerprint"]
    assert info["train_metrics"]["train_loss"] == pytest.approx(reference["train_metrics"]["train_loss"], rel=1e-6)
    assert "train_loss_steps" not in info["train_metrics"]  # every step is covered
    a, b = load_file(out / "adapter_model.safetensors"), load_file(whole / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "Benevolence" in (out / "README.md").read_text()


def test_a_checkpoint_of_another_recipe_is_refused_before_loading(tmp_path, tiny_model_dir, monkeypatch):
    """Resuming with another learning rate would train on with the old one (the scheduler state
    comes from the checkpoint); another LoRA rank would fail in a 400-line size mismatch. Both
    are refused, naming the settings and the fix, before any weights are loaded; a checkpoint
    without its record (an interrupted save) is passed over."""
    import shutil

    from vat_hf.train.common import CHECKPOINT_RECORD, run_training

    out = tmp_path / "out"
    keys = dict(output_dir=str(out), save_strategy="steps", save_steps=1, max_steps=3)
    recipe = tiny_recipe(tmp_path / "r.yaml", tiny_model_dir, **keys)
    _interrupted_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_training("sft", *parse_training_args("sft", ["--config", str(recipe)]))
    monkeypatch.setattr("vat_hf.train.common.load_base_model", lambda *a, **k: pytest.fail("loaded a model"))
    for flags, shown in ((["--learning_rate", "1e-5"], "learning_rate: 0.01 there, 1e-05 now"),
                         (["--lora_r", "8"], "lora_r: 4 there, 8 now")):
        with pytest.raises(TrainingConfigError, match="written by another training recipe") as err:
            run_training("sft", *parse_training_args("sft", ["--config", str(recipe), "--resume", *flags]))
        assert shown in str(err.value) and f"remove {out}/checkpoint-*" in str(err.value)
    # A newer checkpoint without a record (its save was cut short) is not resumed from.
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-3")
    (out / "checkpoint-3" / CHECKPOINT_RECORD).unlink()
    monkeypatch.undo()
    run_training("sft", *parse_training_args("sft", ["--config", str(recipe), "--resume"]))
    assert read_training_info(out)["resumed_from"].endswith("checkpoint-2")


def _random_adapter(base_dir, path, seed):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(path)
    return str(path)


def test_adapter_switching_matches_loading_each_adapter_alone(tmp_path, tiny_model_dir):
    from vat_hf.data.sources import load_items
    from vat_hf.evaluation import Evaluator
    from vat_hf.models import load_model
    from vat_hf.pipeline import ExperimentConfig, ExperimentRunner
    from vat_hf.prompts import JudgePrompt

    items = load_items("builtin", split="test", max_scenes=1)
    adapters = [_random_adapter(tiny_model_dir, tmp_path / f"a{k}", seed=k) for k in (1, 2)]
    cfg = ExperimentConfig.from_dict({"target_value": "Benevolence", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "run"),
                                      "eval": {"dtype": "float32", "device": "cpu"}})
    runner = ExperimentRunner(cfg, progress=False)
    def stage(name, prompt, adapter=None):
        return read_jsonl(runner.evaluate(name, items, prompt, adapter=adapter)["files"]["judgments"])

    switched = {"base": stage("baseline", JudgePrompt(name="baseline"))}
    for k, adapter in enumerate(adapters):
        switched[adapter] = stage(f"a{k}", JudgePrompt(), adapter=adapter)
    switched["base-again"] = stage("base-again", JudgePrompt(name="again"))  # adapters off again
    for key in [None, *adapters]:
        alone = load_model(str(tiny_model_dir), adapter=key, device="cpu", dtype="float32")
        expected = Evaluator(alone.model, alone.tokenizer, progress=False).judge(items)
        for got in ([switched["base"], switched["base-again"]] if key is None else [switched[key]]):
            assert [r["id"] for r in got] == [r["id"] for r in expected]
            assert torch.allclose(torch.tensor([r["probs"] for r in got]), torch.tensor([r["probs"] for r in expected]), atol=1e-6)
    a, b = (torch.tensor([r["probs"] for r in switched[x]]) for x in adapters)
    assert not torch.allclose(a, b, atol=1e-3)  # the two adapters really differ


def test_vat_hf_run_trains_scores_and_reuses_adapters(tmp_path, tiny_model_dir, monkeypatch, forbid_loading):
    from vat_hf.pipeline import ExperimentConfig, run_experiment

    recipe = tiny_recipe(tmp_path / "r.yaml", max_steps=1)  # no model: the experiment's base is used
    cfg = ExperimentConfig.from_dict({
        "target_value": "benevolence", "model": str(tiny_model_dir), "output_dir": str(tmp_path / "run"),
        "data": {"max_scenes": 1}, "metric": {"n_bootstrap": 20}, "eval": {"dtype": "float32", "device": "cpu"},
        "interventions": [{"type": "sft", "name": "sft-lora", "recipe": str(recipe)},
                          {"type": "dpo", "name": "dpo-lora", "recipe": str(recipe), "overrides": {"beta": 0.2}}],
    })
    out = run_experiment(cfg, progress=False)
    assert [r["name"] for r in out["results"]] == ["sft-lora", "dpo-lora"]
    for result in out["results"]:
        adapter = Path(result["model"]["adapter"])
        info = read_training_info(adapter)
        assert (adapter / "adapter_config.json").exists() and info["base_model_path"] == str(tiny_model_dir)
        assert info["data"]["n_scenes"] == 2 and isinstance(result["vat"]["gain"], float)
        assert info["vat"]["gain"] == result["vat"]["gain"] and "| gain |" in (adapter / "README.md").read_text()
        assert len(read_jsonl(tmp_path / "run" / "judgments" / f"{result['name']}.jsonl")) == 20
        assert (adapter / "vat_recipe.yaml").exists()  # the resolved recipe, kept for the record
    assert read_training_info(tmp_path / "run/adapters/dpo-lora")["hyperparameters"]["beta"] == 0.2
    # A second run reuses the finished adapters and judgments: nothing is trained, judged or loaded.
    monkeypatch.setattr("vat_hf.train.common.run_training", lambda *a, **k: pytest.fail("trained again"))
    forbid_loading()
    again = run_experiment(cfg, progress=False)
    assert [r["vat"]["gain"] for r in again["results"]] == [r["vat"]["gain"] for r in out["results"]]
    # The base model is the experiment's; a full fine-tuning recipe is refused before training.
    from vat_hf.errors import RecipeError
    from vat_hf.interventions import InterventionConfig

    spec = InterventionConfig(type="sft", name="full", recipe=str(recipe), overrides={"use_peft": False})
    with pytest.raises(RecipeError, match="use_peft: true"):
        train_intervention(spec, str(tiny_model_dir), "Benevolence", "builtin", None, [], tmp_path / "full")
    # A bad training key fails at the start of the run, before the baseline evaluation.
    cfg.output_dir = str(tmp_path / "typo")
    cfg.interventions[1].overrides = {"lerning_rate": 1e-4}
    with pytest.raises(TrainingConfigError, match=r"intervention 'dpo-lora' .*unknown key\(s\) 'lerning_rate'"):
        run_experiment(cfg, progress=False)
    assert not (tmp_path / "typo" / "judgments").exists()
