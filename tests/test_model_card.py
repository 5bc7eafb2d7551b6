"""Model cards of trained adapters, built and read back with huggingface_hub's card classes: the
VAT result reaches the card's model-index as EvalResult entries."""

import pytest
from huggingface_hub import ModelCard

from vat_hf.train.card import add_vat_result, read_training_info, write_model_card
from vat_hf.metrics import formatting as fmt

INFO = {
    "method": "dpo", "name": "dpo-lora", "target_value": "Benevolence", "base_model": "SmolLM2-135M-Instruct",
    "base_model_hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "peft": True,
    "data": {"source": "builtin", "n_scenes": 11, "n_examples": 11},
    "hyperparameters": {"learning_rate": 5e-4, "max_steps": 10}, "train_metrics": {"train_loss": 0.52},
    "versions": {"transformers": "5.0"},
}
DATA = {"source": "builtin", "split": "test", "n_items": 80, "n_scenes": 4, "fingerprint": "ab" * 32}


def metric(**keys):
    base = {"target_value": "Benevolence", "n_items": 80, "gain": 0.25, "vat": 0.4, "nvat": 0.1, "gini": 0.2,
            "drift": {"Benevolence": 0.25, "Power": -0.1}, "ci": {"gain": [0.1, 0.4], "vat": [0.2, 0.6]}}
    return {**base, **keys}


def card_of(tmp_path, vat):
    write_model_card(tmp_path, INFO)
    add_vat_result(tmp_path, vat, data=DATA)
    return ModelCard.load(tmp_path / "README.md")


def by_metric(card):
    return {r.metric_type: r for r in card.data.eval_results}


def test_a_resolved_gain_gives_gain_tax_and_vat_entries(tmp_path):
    card = card_of(tmp_path, metric(gain_status="resolved", tax=0.1))
    results = by_metric(card)
    assert {k: r.metric_value for k, r in results.items()} == {"gain": 0.25, "tax": 0.1, "vat": 0.4}
    for r in results.values():
        assert (r.dataset_revision, r.dataset_split, r.dataset_type) == ("ab" * 32, "test", "vat-hf/builtin")
        assert r.task_name == "Value Alignment Tax toward Benevolence"
    # The Hub reads the model-index block of the metadata.
    index = card.data.to_dict()["model-index"]
    assert index[0]["name"] == "dpo-lora" and len(index[0]["results"][0]["metrics"]) == 3
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "peft"
    assert "## Value Alignment Tax" in card.text and "not reported as a number" not in card.text
    assert read_training_info(tmp_path)["vat_data"]["fingerprint"] == "ab" * 32


@pytest.mark.parametrize("status", ["not_resolved", "wrong_direction", "no_bootstrap"])
def test_an_unresolved_gain_gives_no_vat_entry_and_says_why(tmp_path, status):
    card = card_of(tmp_path, metric(gain_status=status, vat=None, tax=0.1))
    assert set(by_metric(card)) == {"gain", "tax"}
    assert "not reported as a number" in card.text and fmt.gain_status_words(status) in card.text


def test_a_result_without_gain_status_is_read_by_its_vat(tmp_path):
    assert set(by_metric(card_of(tmp_path, metric()))) == {"gain", "vat"}  # no tax key: no tax entry
    card = card_of(tmp_path, metric(vat=None))
    assert set(by_metric(card)) == {"gain"} and "the metric gave no value" in card.text


def test_a_card_before_any_result_has_no_model_index(tmp_path):
    write_model_card(tmp_path, INFO)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results is None and "Not measured yet" in card.text
    assert card.data.tags[:3] == ["vat-hf", "trl", "dpo"] and card.data.license == "apache-2.0"
