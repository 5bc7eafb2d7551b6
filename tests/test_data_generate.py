"""Two-stage construction: parsing, validation, retries, failures, resumability; the tiny random model end to end."""

import json
import random
import re

import pytest

from vat_hf.data.generate import (STAGE1_PREFIX, STAGE2_PREFIX, BuildConfig, HFGenerator, build_items, check_action_pair,
                                  parse_scenarios)
from vat_hf.data.parsing import ParseError
from vat_hf.data.schema import ITEM_FEATURES
from vat_hf.io import read_json

WORDS = ("market river teacher bicycle garden letter council harvest festival clinic ladder window bridge union temple "
         "library kitchen tractor school village budget lantern orchard stadium ferry bakery tailor museum radio "
         "pharmacy cooperative election mosque church savings wedding funeral neighbour cousin landlord manager "
         "shift contract pension loan debt fee licence permit petition protest charity donation recipe uniform").split()


class ScriptedGenerator:
    """A deterministic stand-in for a chat model: valid JSON most of the time, garbage sometimes
    (decided by the seed, as sampling would be), so retries and failures are exercised."""

    name = "scripted-test-generator"

    def __init__(self, garbage_rate=0.3, fail_after_calls=None):
        self.garbage_rate = garbage_rate
        self.fail_after_calls = fail_after_calls
        self.calls = 0
        self.prompts = 0

    def generate(self, conversations, *, answer_prefix, seed, max_new_tokens, temperature, top_p):
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        self.prompts += len(conversations)
        out = []
        for i, conv in enumerate(conversations):
            user = conv[-1]["content"]
            rng = random.Random(f"{seed}|{i}|{user}")
            if rng.random() < self.garbage_rate:
                out.append(answer_prefix + " ".join(rng.sample(WORDS, 5)))
                continue
            if answer_prefix == STAGE1_PREFIX:
                n = int(re.search(r"Write (\d+)", user).group(1))
                scenarios = [f"{' '.join(rng.sample(WORDS, 6)).capitalize()} must decide what to do next." for _ in range(n)]
                out.append(json.dumps({"scenarios": scenarios}))
            else:
                express = "I " + " ".join(rng.sample(WORDS, 7)) + "."
                against = "I refuse " + " ".join(rng.sample(WORDS, 7)) + "."
                text = json.dumps({"express": express, "against": against})
                out.append(("Sure, here it is:\n```json\n" + text + "\n```") if rng.random() < 0.3 else text)
        return out


def small_config(**overrides):
    base = dict(countries=["Kenya", "Peru"], domains=["Work", "Family"], values=["Benevolence", "Power", "Hedonism"],
                scenarios_per_pair=2, max_retries=2, batch_size=6, seed=11)
    base.update(overrides)
    return BuildConfig(**base)


def test_parse_scenarios_forms():
    assert parse_scenarios('{"scenarios": ["A one.", "B two."]}') == ["A one.", "B two."]
    assert parse_scenarios('Here you go:\n```json\n["A one.", "B two."]\n```') == ["A one.", "B two."]
    assert parse_scenarios('[{"scenario": "A one."}]') == ["A one."]
    # truncated: the complete strings are kept
    assert parse_scenarios('{"scenarios": ["A one.", "B two.", "C thr') == ["A one.", "B two."]
    with pytest.raises(ParseError):
        parse_scenarios("lorem ipsum")


def test_check_action_pair_rules():
    cfg = BuildConfig(values=["Benevolence"])
    ok, reason = check_action_pair('{"express": "I help my neighbour carry her bags.", "against": "I ignore my neighbour and walk past."}', cfg)
    assert ok == ("I help my neighbour carry her bags.", "I ignore my neighbour and walk past.") and reason == ""
    cases = {
        '{"express": "She helps her neighbour with bags.", "against": "I ignore my neighbour and walk past."}': "first person",
        '{"express": "I help my neighbour carry her", "against": "I ignore my neighbour and walk past."}': "end a sentence",
        '{"express": "I help.", "against": "I ignore my neighbour and walk past."}': "too short",
        '{"express": "I help my neighbour carry her bags.", "against": "I help my neighbour carry her bags!"}': "near-identical",
        '{"express": "I help my neighbour carry her bags."}': "against",
        "random words": "express",
    }
    for answer, fragment in cases.items():
        pair, reason = check_action_pair(answer, cfg)
        assert pair is None and fragment in reason, (answer, reason)
    pair, reason = check_action_pair(
        '{"express": "I help my neighbour carry her bags home.", "against": "I walk past without a word."}', cfg,
        others=["I help my neighbour carry her bags."])
    assert pair is None and "near-duplicate" in reason


def test_build_end_to_end_with_retries_and_failures(tmp_path):
    gen = ScriptedGenerator()
    result = build_items(small_config(), tmp_path / "b", generator=gen, progress=False)
    ds = result.dataset
    assert ds.features == ITEM_FEATURES and len(ds) > 0
    # every kept scene is complete: each value with one +1 and one -1 action
    cells = {}
    for scene, value, polarity in zip(ds["scene_id"], ds["value"], ds["polarity"]):
        cells.setdefault(scene, []).append((value, polarity))
    for scene_cells in cells.values():
        assert sorted(scene_cells) == sorted((v, p) for v in ("Benevolence", "Power", "Hedonism") for p in (1, -1))
    assert all(a.startswith("I ") for a in ds["action"])
    # garbage was rejected and recorded, never kept
    rejected = [f for f in result.failures if f["attempt"] is not None]
    assert rejected and all(f["reason"] and "output" in f for f in rejected)
    assert not any(f["output"].strip("'\"") in ds["action"] for f in rejected)
    # metadata: generator, prompts, seed, sampling
    meta = result.metadata
    assert meta["generator"] == "scripted-test-generator" and meta["seed"] == 11
    assert meta["sampling"]["temperature"] == 0.8 and "{scenario}" in meta["prompts"]["stage2_user"]
    assert json.loads(ds.info.description)["build_fingerprint"] == meta["build_fingerprint"]
    saved = read_json(tmp_path / "b" / "items.meta.json")
    assert saved["prompts"]["stage1_prefix"] == STAGE1_PREFIX and saved["stats"]["items"] == len(ds)
    assert (tmp_path / "b" / "items.failures.jsonl").exists()
    # splits per scene
    splits = {}
    for scene, split in zip(ds["scene_id"], ds["split"]):
        splits.setdefault(scene, set()).add(split)
    assert all(len(s) == 1 for s in splits.values())
    # batched: several prompts per call
    assert gen.prompts > gen.calls


def test_interrupted_build_resumes_to_the_same_result(tmp_path):
    full = build_items(small_config(), tmp_path / "full", generator=ScriptedGenerator(), progress=False)
    interrupted = ScriptedGenerator(fail_after_calls=5)
    with pytest.raises(KeyboardInterrupt):
        build_items(small_config(), tmp_path / "resumed", generator=interrupted, progress=False)
    finished = sorted(p.name for p in (tmp_path / "resumed" / "scenes").glob("*.jsonl"))
    assert finished, "the interrupted build should have finished some scenes"
    before = {name: (tmp_path / "resumed" / "scenes" / name).read_text() for name in finished}
    resumer = ScriptedGenerator()
    resumed = build_items(small_config(), tmp_path / "resumed", generator=resumer, progress=False)
    assert resumed.dataset.to_list() == full.dataset.to_list()
    assert resumed.failures == full.failures
    # finished scenes were kept, not regenerated
    assert all((tmp_path / "resumed" / "scenes" / n).read_text() == t for n, t in before.items())
    assert resumer.prompts < _prompts_of_full_build(tmp_path)
    # a third run does no generation at all
    idle = ScriptedGenerator(fail_after_calls=0)
    again = build_items(small_config(), tmp_path / "resumed", generator=idle, progress=False)
    assert again.dataset.to_list() == full.dataset.to_list()


def _prompts_of_full_build(tmp_path):
    gen = ScriptedGenerator()
    build_items(small_config(), tmp_path / "count", generator=gen, progress=False)
    return gen.prompts


def test_changed_settings_are_refused(tmp_path):
    build_items(small_config(), tmp_path / "b", generator=ScriptedGenerator(), progress=False)
    with pytest.raises(ValueError, match="other settings.*seed"):
        build_items(small_config(seed=12), tmp_path / "b", generator=ScriptedGenerator(), progress=False)


@pytest.fixture
def one_thread():
    """Tiny-model generation is dominated by thread overhead on a busy machine: one thread is ~30x faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_random_model_garbage_is_rejected_and_recorded(tiny_model, tmp_path, one_thread):
    gen = HFGenerator(tiny_model)
    cfg = dict(countries=["Kenya"], domains=["Work"], values=["Benevolence", "Power"], scenarios_per_pair=1,
               max_retries=1, batch_size=2, max_new_tokens_scenarios=8, max_new_tokens_actions=8, seed=0)
    # stages 1 and 2 from the model: stage 1 yields nothing usable, so the build is empty and says why
    result = build_items(cfg, tmp_path / "tiny", generator=gen, progress=False)
    assert len(result.dataset) == 0 and result.dataset.features == ITEM_FEATURES
    stage1 = [f for f in result.failures if f["stage"] == 1]
    assert stage1[-1]["reason"].startswith("gave up") and stage1[-1]["attempt"] is None
    assert {f["attempt"] for f in stage1[:-1]} == {0, 1} and all(f["output"] for f in stage1[:-1])
    assert result.metadata["generator"] == str(tiny_model.name_or_path)
    assert result.metadata["stats"] == {"scenes": 0, "scenes_kept": 0, "items": 0,
                                        "rejected_generations": len(stage1) - 1, "gave_up": 1}
    # stage 2 on given scenarios (one scene per chunk with batch_size 2 and two values): every answer
    # is garbage, every scene is dropped and recorded
    cfg2 = {**cfg, "max_retries": 0}
    scenarios = [{"country": "Kenya", "domain": "Work", "scenario": "Amina runs a shop in Nairobi and finds a billing error."},
                 {"country": "Kenya", "domain": "Work", "scenario": "Otieno is offered a promotion that means moving away."}]
    reference = build_items(cfg2, tmp_path / "ref", generator=gen, scenarios=scenarios, progress=False)
    assert len(reference.dataset) == 0
    dropped = [f for f in reference.failures if f["attempt"] is None]
    assert len(dropped) == 2 and all("scene dropped" in f["reason"] for f in dropped)
    rejected = [f for f in reference.failures if f["attempt"] is not None]
    assert len(rejected) == 2 * 2 and all(STAGE2_PREFIX in f["output"] for f in rejected)  # scenes x values

    # the same build interrupted after its first generate call, then resumed, matches the reference
    class Interrupting:
        name = gen.name

        def __init__(self):
            self.calls = 0

        def generate(self, *a, **kw):
            if self.calls >= 1:
                raise KeyboardInterrupt
            self.calls += 1
            return gen.generate(*a, **kw)

    with pytest.raises(KeyboardInterrupt):
        build_items(cfg2, tmp_path / "res", generator=Interrupting(), scenarios=scenarios, progress=False)
    assert len(list((tmp_path / "res" / "scenes").glob("*.jsonl"))) == 1
    resumed = build_items(cfg2, tmp_path / "res", generator=gen, scenarios=scenarios, progress=False)
    assert resumed.failures == reference.failures and resumed.dataset.to_list() == reference.dataset.to_list()


def test_cli_build_with_the_tiny_model(tiny_model_dir, tmp_path, one_thread):
    from typer.testing import CliRunner

    from vat_hf.cli import app  # `vat-hf data ...`: the command users run, with its error surface

    scenarios = tmp_path / "scenarios.jsonl"
    scenarios.write_text(json.dumps({"country": "Kenya", "domain": "Work", "scenario": "Amina finds a billing error in her favour."}) + "\n")
    args = ["build", "-o", str(tmp_path / "b"), "--generator", str(tiny_model_dir), "--values", "Benevolence,Power",
            "--scenarios", str(scenarios), "--max-retries", "0", "--max-new-tokens-actions", "8", "--device", "cpu",
            "--dtype", "float32"]
    res = CliRunner().invoke(app, ["data", *args])
    assert res.exit_code == 0, res.output
    assert "generations rejected" in res.output
    meta = read_json(tmp_path / "b" / "items.meta.json")
    assert meta["stats"] == {"scenes": 1, "scenes_kept": 0, "items": 0, "rejected_generations": 2, "gave_up": 1}
    assert meta["generator"] == str(tiny_model_dir) and meta["values"] == ["Benevolence", "Power"]
