"""Items are prepared in waves of whole scenes, the next wave on a worker thread while the model
runs the current one (``Evaluator.first_wave_items``, ``wave_items``).

Waves change when preparation happens and which scene prefixes are held at once, never the
judgments: every test compares with full encoding or with one wave."""

import threading
import weakref

import pytest

from vat_hf.evaluation import Evaluator
from vat_hf.evaluation import judge as judge_module
from vat_hf.evaluation.judge import scene_waves
from vat_hf.prompts import JudgePrompt

from test_prefix_scene import assert_same_judgments, scene_items  # noqa: E402

PROMPT = JudgePrompt(system="You value kindness above all.",
                     demonstrations=(("Scenario: a demonstration scene " * 4 + "\nAction: I act.", "Rating: 4"),),
                     name="test-waves")


def evaluator(model, waves=None, **kwargs):
    """An evaluator whose waves hold ``waves`` = (first, rest) items (None: the defaults)."""
    kwargs = {"max_batch_size": 4, **kwargs}
    ev = Evaluator(model.model, model.tokenizer, prompt=PROMPT, progress=False, **kwargs)
    if waves is not None:
        ev.first_wave_items, ev.wave_items = waves
    return ev


def test_scene_waves_keep_scenes_whole_and_the_input_order():
    its = [{"scenario": s} for s in "aabbbcddde"]
    waves = scene_waves(its, range(10), first_size=2, size=4)
    assert waves == [[0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]
    # A scene larger than a wave is a wave of its own; indices keep their given order in a wave.
    assert scene_waves(its, [9, 4, 3, 2, 0], first_size=1, size=2) == [[9], [4, 3, 2], [0]]
    assert scene_waves(its, [], first_size=4, size=4) == []


@pytest.mark.parametrize("mode", ["logprob", "logprob-multitoken"])
def test_judging_in_waves_equals_one_wave_and_full_encoding(sharp_model, mode):
    its = scene_items(7, 3)
    one = evaluator(sharp_model, mode=mode)
    want = one.judge(its)
    full = evaluator(sharp_model, mode=mode, prefix_reuse=False, max_batch_size=1).judge(its)
    assert_same_judgments(want, full)
    ev = evaluator(sharp_model, waves=(3, 6), mode=mode)
    assert len(scene_waves(its, range(len(its)), 3, 6)) == 4
    got = ev.judge(its)
    assert_same_judgments(got, want)
    assert_same_judgments(got, full)
    # Every item still continues from its scene; each scene is run once, in its wave.
    assert ev.stats.n_scene_prefix == one.stats.n_scene_prefix == len(its)
    assert ev.stats.scene_prefixes == one.stats.scene_prefixes == 7
    assert ev.stats.n_computed == len(its) and ev.stats.prefix_tokens == one.stats.prefix_tokens


def test_generate_mode_prepares_its_waves_on_the_judging_thread(sharp_model, monkeypatch):
    # Generate mode decodes with the tokenizer between passes, so nothing else may use it then.
    threads = []
    original = Evaluator._requests
    monkeypatch.setattr(Evaluator, "_requests",
                        lambda self, *a: threads.append(threading.current_thread().name) or original(self, *a))
    its = scene_items(4, 2)
    got = evaluator(sharp_model, waves=(2, 2), mode="generate", max_new_tokens=3).judge(its)
    assert threads == [threading.current_thread().name] * 4  # four waves, all on this thread
    want = evaluator(sharp_model, mode="generate", max_new_tokens=3, prefix_reuse=False, max_batch_size=1).judge(its)
    assert [r.get("generated") for r in got] == [r.get("generated") for r in want]


def test_the_next_wave_is_prepared_while_the_current_one_runs(sharp_model, monkeypatch):
    """Each batch of wave 0 waits (up to 30 s) until wave 1's preparation has started on the worker
    thread: prepared one after the other, wave 1 would start only after wave 0's batches."""
    its = scene_items(3, 4)
    started = {}
    wave_1_started = threading.Event()
    original_requests, original_launch = Evaluator._requests, Evaluator._launch_logprob

    def requests(self, items, wave):
        started[items[wave[0]]["scene_id"]] = threading.current_thread().name
        if items[wave[0]]["scene_id"] == "scene-1":
            wave_1_started.set()
        return original_requests(self, items, wave)

    waited = []

    def launch(self, chunk, use_prefix):
        if its[chunk[0].index]["scene_id"] == "scene-0":
            waited.append(wave_1_started.wait(timeout=30))
        return original_launch(self, chunk, use_prefix)

    monkeypatch.setattr(Evaluator, "_requests", requests)
    monkeypatch.setattr(Evaluator, "_launch_logprob", launch)
    got = evaluator(sharp_model, waves=(4, 4)).judge(its)
    assert waited and all(waited)
    me = threading.current_thread().name
    assert started["scene-0"] == me and started["scene-1"] != me and started["scene-2"] != me
    assert started["scene-1"].startswith("vat-hf-prepare")
    monkeypatch.undo()
    assert_same_judgments(got, evaluator(sharp_model).judge(its))


def test_scene_prefixes_are_freed_wave_by_wave(sharp_model, monkeypatch):
    """The scene nodes alive at any batch are those of at most two waves (the current one and the
    last batch of the one before, still being read back), not those of every scene judged."""
    nodes, alive_at_launch = [], []
    original_keep, original_launch = judge_module.keep_own, Evaluator._launch_logprob

    def keep_own(node, cache, row):
        if node.kind == "scene":
            nodes.append(weakref.ref(node))
        return original_keep(node, cache, row)

    def launch(self, chunk, use_prefix):
        alive_at_launch.append(sum(1 for ref in nodes if ref() is not None))
        return original_launch(self, chunk, use_prefix)

    monkeypatch.setattr(judge_module, "keep_own", keep_own)
    monkeypatch.setattr(Evaluator, "_launch_logprob", launch)
    its = scene_items(8, 3)
    evaluator(sharp_model, waves=(6, 6)).judge(its)  # four waves of two scenes
    assert len(nodes) == 8
    assert max(alive_at_launch) <= 4
    nodes.clear()
    alive_at_launch.clear()
    evaluator(sharp_model).judge(its)  # one wave: every scene is held to the end
    assert max(alive_at_launch) == 8


def test_the_prefix_check_waits_for_a_wave_that_uses_the_prefix(sharp_model, monkeypatch):
    """With left truncation, a wave whose prompts are all cut (losing the start of the shared prefix)
    uses no prefix: the one-time check must then run on the first wave that does, not be marked
    done unchecked (it was, before waves, for a call whose items all missed the prefix)."""
    checks = []
    original = Evaluator._check_prefix
    monkeypatch.setattr(Evaluator, "_check_prefix", lambda self, *a: checks.append(1) or original(self, *a))
    short = scene_items(2, 2, prefix="s")
    long = [dict(it, id=f"l{j}", scenario="A very long scenario about a village. " * 12, scene_id=f"long-{j}")
            for j, it in enumerate(scene_items(2, 1))]
    ev = evaluator(sharp_model, waves=(1, 1), truncation="left")
    ev.max_length = max(len(ids) for ids in ev.encode(short)) + 2
    got = ev.judge(long + short)
    # Wave 0 holds the long scene's two items, cut on the left; waves 1 and 2 the short scenes.
    assert scene_waves(long + short, range(len(got)), 1, 1) == [[0, 1], [2, 3], [4, 5]]
    assert got[0]["truncated_tokens"] > 0 and ev.stats.n_prefix == len(short)
    assert ev._prefix_checked and len(checks) == 2  # the shared level, then the scene level
    # A first call whose items all miss the prefix leaves the check to the next call.
    ev = evaluator(sharp_model, truncation="left")
    ev.max_length = max(len(ids) for ids in ev.encode(short)) + 2
    checks.clear()
    ev.judge(long)
    assert ev.stats.n_prefix == 0 and not ev._prefix_checked and checks == []
    ev.judge(short)
    assert ev._prefix_checked and len(checks) == 2


def test_a_failure_preparing_a_wave_stops_the_run_and_keeps_what_was_judged(sharp_model, monkeypatch, tmp_path):
    original = Evaluator._requests

    def requests(self, items, wave):
        if items[wave[0]]["scene_id"] == "scene-2":
            raise RuntimeError("tokenizer broke on wave 2")
        return original(self, items, wave)

    monkeypatch.setattr(Evaluator, "_requests", requests)
    its = scene_items(4, 2)
    ev = evaluator(sharp_model, waves=(2, 2), cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match="tokenizer broke on wave 2"):
        ev.judge(its)
    assert not [t for t in threading.enumerate() if t.name.startswith("vat-hf-prepare")]
    monkeypatch.undo()
    resumed = evaluator(sharp_model, waves=(2, 2), cache_dir=tmp_path)
    got = resumed.judge(its)
    # Waves 0 and 1 were judged and cached before wave 2's preparation failed.
    assert resumed.stats.n_cached == 4 and resumed.stats.n_computed == 4
    assert_same_judgments(got, evaluator(sharp_model).judge(its))


def test_a_caller_that_stops_early_leaves_no_preparing_thread(sharp_model):
    its = scene_items(4, 2)
    ev = evaluator(sharp_model, waves=(2, 2))
    outputs = ev.iter_outputs(its)
    pairs, computed = next(outputs)
    assert computed and pairs
    outputs.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("vat-hf-prepare")]
