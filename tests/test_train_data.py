import json

import pytest

from vat_hf.data.builtin import load_builtin
from vat_hf.prompts import advice_user_turn
from vat_hf.train.data import TrainingDataError, dpo_pairs, load_training_items, sft_examples
from vat_hf.values import UnknownValueError


def test_builders_refuse_test_items_and_unknown_values():
    with pytest.raises(TrainingDataError, match="not in the 'train' split"):
        sft_examples(load_builtin(), "Benevolence")  # all items, test scenes included
    with pytest.raises(TrainingDataError, match="not in the 'train' split"):
        dpo_pairs(load_builtin("test"), "Benevolence")
    with pytest.raises(UnknownValueError, match="valid names"):
        sft_examples(load_builtin("train"), "Kindness")


def test_sft_examples_are_conversational_target_actions_from_train_scenes():
    train = load_builtin("train")
    test_scenarios = {item["scenario"] for item in load_builtin("test")}
    rows = sft_examples(train, "benevolence")
    expected = [i for i in train if i["value"] == "Benevolence" and i["polarity"] == 1]
    assert len(rows) == len(expected) == len({i["scene_id"] for i in train})
    for row, item in zip(rows, expected):
        assert row["prompt"] == [{"role": "user", "content": advice_user_turn(item)}]
        assert row["completion"] == [{"role": "assistant", "content": item["action"]}]
        assert row["prompt"][0]["content"].startswith("Scenario: ") and item["scenario"] not in test_scenarios


def test_dpo_pairs_are_well_formed():
    train = load_builtin("train")
    by_action = {item["action"]: item for item in train}
    rows = dpo_pairs(train, "Power")
    assert len(rows) == len({i["scene_id"] for i in train})
    for row in rows:
        chosen, rejected = by_action[row["chosen"][0]["content"]], by_action[row["rejected"][0]["content"]]
        assert chosen["scene_id"] == rejected["scene_id"] and chosen["value"] == rejected["value"] == "Power"
        assert (chosen["polarity"], rejected["polarity"]) == (1, -1)
        assert row["prompt"] == [{"role": "user", "content": advice_user_turn(chosen)}]
        assert [m["role"] for m in row["chosen"] + row["rejected"]] == ["assistant", "assistant"]


def test_chat_template_is_applied_as_trl_does(tiny_model_dir):
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = dpo_pairs(load_builtin("train"), "Benevolence")[0]
    assert is_conversational(row)
    text = apply_chat_template(row, tokenizer)
    assert text["prompt"].endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nScenario: " in text["prompt"]
    assert text["chosen"].startswith(row["chosen"][0]["content"]) and text["chosen"].rstrip().endswith("<|im_end|>")


def test_empty_or_test_only_training_split_is_a_clear_error(tmp_path):
    test_only = tmp_path / "test_only.jsonl"
    test_only.write_text("".join(json.dumps(item) + "\n" for item in load_builtin("test")[:20]))
    with pytest.raises(TrainingDataError, match="no 'train' items.*train scenes"):
        load_training_items(str(test_only))
    assert {i["split"] for i in load_training_items("builtin", max_scenes=2)} == {"train"}
