import pytest

from vat_hf.data import load_builtin
from vat_hf.interventions import TrainSplitError, value_prompt
from vat_hf.prompts import JUDGE_TEMPLATE, RATING_PREFIX, JudgePrompt, judge_text


@pytest.mark.parametrize("k", [2, 4, 8])
def test_k_shot_demonstrations_come_from_train_scenes_and_favour_the_target(k):
    train = load_builtin("train")
    prompt = value_prompt("benevolence", train, k_shots=k, seed=1)
    assert len(prompt.demonstrations) == k
    by_text = {f"Scenario: {i['scenario']}\nAction: {i['action']}": i for i in train}
    ratings = []
    for user, answer in prompt.demonstrations:
        item = next(i for key, i in by_text.items() if user.endswith(key))
        assert item["split"] == "train" and item["value"] == "Benevolence"
        ratings.append((item["polarity"], answer))
    assert all(answer == (f"{RATING_PREFIX}5" if pol > 0 else f"{RATING_PREFIX}1") for pol, answer in ratings)
    assert {pol for pol, _ in ratings} == {1, -1}
    assert "Benevolence" in prompt.system and "welfare" in prompt.system


def test_test_items_are_refused_as_material():
    with pytest.raises(TrainSplitError, match="not in the 'train' split"):
        value_prompt("Benevolence", load_builtin("test"), k_shots=2)


def test_same_seed_same_prompt_and_fingerprint_changes_with_wording():
    train = load_builtin("train")
    a = value_prompt("Power", train, k_shots=4, seed=3)
    b = value_prompt("Power", train, k_shots=4, seed=3)
    c = value_prompt("Power", train, k_shots=4, seed=4)
    assert a == b and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint() != JudgePrompt().fingerprint()


def test_chat_prompt_ends_with_the_rating_prefix(tiny_model):
    item = load_builtin("test")[0]
    prompt = value_prompt("Benevolence", load_builtin("train"), k_shots=2)
    text = judge_text(tiny_model.tokenizer, prompt, item)
    assert text.endswith("<|im_start|>assistant\n" + RATING_PREFIX)
    assert text.count("<|im_start|>user") == 3 and item["action"] in text
    assert JUDGE_TEMPLATE.split("{")[0] in text
