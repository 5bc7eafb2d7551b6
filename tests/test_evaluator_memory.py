"""Running out of accelerator memory: the batch that did not fit is split, the batch limits stay
lowered, and judging goes on with the same judgments; an item that does not fit alone stops the
run with an error that names it, after every item judged before it was handed over.

The device here is simulated: ``Evaluator._forward`` raises the error CUDA's allocator raises
(``torch.OutOfMemoryError``, "CUDA out of memory. ...") for the passes a test says do not fit.
Everything else, the model passes included, is real."""

import inspect

import pytest
import torch

from vat_hf.errors import format_error
from vat_hf.evaluation import Evaluator
from vat_hf.evaluation.judge import DeviceMemoryError, scene_waves

from test_evaluator_waves import evaluator as waves_evaluator  # noqa: E402
from test_prefix_scene import assert_same_judgments, scene_items  # noqa: E402

CUDA_MESSAGE = ("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
                "312.00 MiB is free.")


class Device:
    """Passes for which ``too_big(requests)`` is true raise CUDA's out-of-memory error; the others
    run. ``failed`` and ``ran`` list each pass's rows (and whether it was a scene-prefix pass)."""

    def __init__(self, monkeypatch, too_big):
        self.failed, self.ran = [], []
        original = Evaluator._forward

        def forward(ev, requests, use_prefix, want_cache=False):
            entry = (len(requests), requests[0].index == -1)
            if too_big(requests):
                self.failed.append(entry)
                raise torch.OutOfMemoryError(CUDA_MESSAGE)
            self.ran.append(entry)
            return original(ev, requests, use_prefix, want_cache)

        monkeypatch.setattr(Evaluator, "_forward", forward)


def evaluator(model, waves=None, **kwargs):
    """The waves tests' evaluator with the default row limit (64), so that batches have rows to lose."""
    default = inspect.signature(Evaluator).parameters["max_batch_size"].default
    return waves_evaluator(model, waves, **{"max_batch_size": default, **kwargs})


@pytest.mark.parametrize("mode", ["logprob", "logprob-multitoken", "generate"])
def test_a_batch_that_does_not_fit_is_split_and_the_limits_stay_lowered(sharp_model, monkeypatch, mode):
    """Four waves of twelve items; the device holds three rows a pass. The first wave's batch of
    twelve fails, then its half of six; from then on every batch has at most three rows, in that
    wave and the next three (whose batches would each fail twice again if the limits were reset)."""
    its = scene_items(4, 12)
    kwargs = {"mode": mode, "max_new_tokens": 3} if mode == "generate" else {"mode": mode}
    want = evaluator(sharp_model, **kwargs).judge(its)
    device = Device(monkeypatch, lambda requests: len(requests) > 3)
    ev = evaluator(sharp_model, waves=(12, 12), **kwargs)
    assert len(scene_waves(its, range(len(its)), 12, 12)) == 4
    got = ev.judge(its)
    assert [rows for rows, _ in device.failed] == [12, 6]
    assert ev.stats.out_of_memory_splits == 2
    assert (ev.stats.max_batch_size, ev.max_batch_size) == (3, 3) and ev.stats.max_batch_tokens < 8192
    assert max(rows for rows, _ in device.ran) == 3
    assert ev.stats.n_computed == len(its)
    if mode == "generate":
        # (The tiny random model writes no rating: its answers themselves are compared.)
        assert [r["generated"] for r in got] == [r["generated"] for r in want]
    else:
        assert_same_judgments(got, want)


def test_every_item_is_handed_over_once_when_a_pipelined_batch_is_split(sharp_model, monkeypatch):
    """Single-token batches are launched before the previous one is read back. Here the first batch
    (16 rows) runs and the second (14) does not fit: the first is read back once, and the second's
    items come from its halves (7 rows, which fail too, then 3)."""
    its = scene_items(6, 5)
    item_passes = []

    def too_big(requests):
        if requests[0].index == -1 or len(requests) == 1:
            return False  # scene prefixes and the one-time checks fit
        item_passes.append(len(requests))
        return len(item_passes) > 1 and len(requests) > 4

    device = Device(monkeypatch, too_big)
    ev = evaluator(sharp_model, max_batch_size=16)
    seen = [i for pairs, computed in ev.iter_outputs(its) if computed for i, _ in pairs]
    assert sorted(seen) == list(range(len(its)))
    assert item_passes[:3] == [16, 14, 7] and [rows for rows, _ in device.failed] == [14, 7]
    assert ev.stats.out_of_memory_splits == 2 and ev.max_batch_size == 3


def test_a_scene_prefix_pass_that_does_not_fit_is_split(sharp_model, monkeypatch):
    its = scene_items(8, 2)
    want = evaluator(sharp_model).judge(its)
    device = Device(monkeypatch, lambda requests: requests[0].index == -1 and len(requests) > 2)
    ev = evaluator(sharp_model)
    got = ev.judge(its)
    assert device.failed and all(scene_pass for _, scene_pass in device.failed)
    assert ev.stats.out_of_memory_splits == len(device.failed)
    # Every scene still runs once, and every item continues from its scene.
    assert ev.stats.scene_prefixes == 8 and ev.stats.n_scene_prefix == len(its)
    assert_same_judgments(got, want)


def test_an_item_that_does_not_fit_alone_stops_the_run_naming_it_and_keeps_what_was_judged(
        sharp_model, monkeypatch, tmp_path):
    long = dict(scene_items(1, 1)[0], id="the-long-one", scene_id="long", scenario="A long scenario. " * 20)
    after = [dict(it, scenario="Another village, on another day. ", scene_id="after")
             for it in scene_items(1, 3, prefix="j")]
    its = scene_items(3, 2) + [long] + after  # waves: three of two items, the long one, the three after it
    finished = []
    original_finish = Evaluator._finish_logprob
    monkeypatch.setattr(Evaluator, "_finish_logprob",
                        lambda self, chunk, *a: finished.extend(chunk) or original_finish(self, chunk, *a))
    device = Device(monkeypatch, lambda requests: any(r.index == len(its) - 4 for r in requests))
    ev = evaluator(sharp_model, waves=(2, 2), cache_dir=tmp_path)
    with pytest.raises(DeviceMemoryError) as raised:
        ev.judge(its)
    text = format_error(raised.value)
    assert "out of memory on cpu: item 'the-long-one'" in text and "does not fit in a batch of its own" in text
    assert "CUDA out of memory. Tried to allocate 1.50 GiB." in text
    assert "fix:" in text and "eval.dtype" in text and "eval.max_length" in text
    assert isinstance(raised.value.__cause__, torch.OutOfMemoryError)
    assert device.failed[-1][0] == 1
    assert scene_waves(its, range(len(its)), 2, 2)[3] == [6]
    # The three waves before the long item's were judged and handed over (and so cached).
    assert len(finished) == 6
    monkeypatch.undo()
    resumed = evaluator(sharp_model, waves=(2, 2), cache_dir=tmp_path)
    got = resumed.judge(its)
    assert resumed.stats.n_cached == 6 and resumed.stats.n_computed == len(its) - 6
    assert_same_judgments(got, evaluator(sharp_model).judge(its))


def test_a_device_too_small_for_the_one_time_check_says_so(sharp_model, monkeypatch):
    # The check's passes are over one item: for want of memory they cannot split either.
    Device(monkeypatch, lambda requests: True)
    check = r"^out of memory on cpu: the item of a one-time prefix check \(\d+ tokens\) does not fit"
    with pytest.raises(DeviceMemoryError, match=check):
        evaluator(sharp_model).judge(scene_items(2, 2))
    # The scene level's check runs its item's scene prefix alone: a scene-prefix pass cannot split.
    monkeypatch.undo()
    Device(monkeypatch, lambda requests: requests[0].index == -1)
    scene = r"^out of memory on cpu: a (stem|scene) prefix of \d+ tokens does not fit"  # not wrapped once more
    with pytest.raises(DeviceMemoryError, match=scene):
        evaluator(sharp_model).judge(scene_items(2, 2))


def test_another_error_is_not_retried_and_the_batch_launched_before_it_is_kept(sharp_model, monkeypatch, tmp_path):
    """A failure that is not for want of memory stops the run as it is; the batch launched before
    the failing one (not yet read back) is handed over and cached first."""
    its = scene_items(4, 3)
    launched = []
    original_launch = Evaluator._launch_logprob

    def launch(self, chunk, use_prefix):
        if len(launched) == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        launched.append(len(chunk))
        return original_launch(self, chunk, use_prefix)

    monkeypatch.setattr(Evaluator, "_launch_logprob", launch)
    ev = evaluator(sharp_model, max_batch_size=3, cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match="illegal memory access") as raised:
        ev.judge(its)
    assert not isinstance(raised.value, DeviceMemoryError) and ev.stats.out_of_memory_splits == 0
    monkeypatch.undo()
    resumed = evaluator(sharp_model, max_batch_size=3, cache_dir=tmp_path)
    resumed.judge(its)
    # Both batches launched before the failure were kept: the second was still being computed.
    assert launched == [3, 3] and resumed.stats.n_cached == 6


def test_vat_hf_eval_goes_on_after_a_split_records_it_and_names_an_item_that_does_not_fit(
        tiny_model_dir, tmp_path, monkeypatch):
    from faultkit import invoke

    from vat_hf.io import read_json

    def args(name):
        return ["eval", "--model", tiny_model_dir, "--max-scenes", "1", "--dtype", "float32",
                "-o", tmp_path / name / "judgments.jsonl", "--cache-dir", tmp_path / name / "cache"]

    Device(monkeypatch, lambda requests: len(requests) > 3)
    result = invoke(args("split"))
    assert result.exit_code == 0, result.output
    stats = read_json(tmp_path / "split" / "results_judgments.json")["stats"]
    assert stats["n_computed"] == 20
    (process,) = stats["per_process"]
    assert process["out_of_memory_splits"] >= 1 and process["max_batch_size"] <= 3
    assert process["max_batch_tokens"] < 8192  # the configured limit, lowered
    monkeypatch.undo()
    # One item that fits in no batch: the run stops with the error a user reads (no traceback),
    # and the same command without that limit finishes from the cache.
    Device(monkeypatch, lambda requests: any(r.index == 7 for r in requests))
    failed = invoke(args("alone"))
    assert failed.exit_code == 1
    assert "error: out of memory on cpu: " in failed.output and "does not fit in a batch of its own" in failed.output
    assert "fix: free memory on the device" in failed.output and "Traceback" not in failed.output
    monkeypatch.undo()
    again = invoke(args("alone"))
    assert again.exit_code == 0, again.output
    stats = read_json(tmp_path / "alone" / "results_judgments.json")["stats"]
    # (The items judged before the one that did not fit were kept: 2 here.)
    assert stats["n_cached"] >= 1 and stats["n_cached"] + stats["n_computed"] == 20, stats
