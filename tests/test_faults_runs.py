"""The fault suite, runs: kill -9 at random points of judging, training and report writing
(child processes), torn and poisoned caches, a full disk (a small tmpfs, where this system lets
the tests mount one), two runs at once, two trainers on one adapter folder, and a planted
token (issue 15). Each asserts the exit status, the message and that every finished result
survives byte for byte; the tiny random model throughout."""

import contextlib
import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from faultkit import (TRAINING, cache_lines, experiment, files, finish, invoke, kill9, read_jsonl_bytes, start, wait_for,
                      whole, write_yaml)

DETERMINISTIC = ("judgments/baseline.jsonl", "judgments/prompt-k2.jsonl", "judgments/samples_baseline.jsonl",
                 "judgments/samples_prompt-k2.jsonl", "report/report.md")
"""Files whose bytes a rerun of a finished experiment reproduces exactly (the results files
carry their own timing)."""

FLOAT_TOL = 1e-6
"""How far a resumed run's probabilities may be from an uninterrupted run's: a resumed run judges
only what its cache lacks, so items meet other batch and scene-prefix companions, and float32
matrix products round differently with other shapes (about 1e-7 here); every rating, argmax,
id, prompt and count must still be equal."""


def numbers_close(x, y, tol: float = FLOAT_TOL) -> bool:
    """Two JSON values equal, floats within ``tol`` (absolute, or relative for large ones)."""
    if isinstance(x, float) or isinstance(y, float):
        return isinstance(x, (int, float)) and isinstance(y, (int, float)) and (
            x == y or abs(x - y) <= tol * max(1.0, abs(x), abs(y)))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(numbers_close(x[k], y[k], tol) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(numbers_close(a, b, tol) for a, b in zip(x, y))
    return x == y


def same_judgments(a: bytes, b: bytes) -> bool:
    """Two JSONL judgment (or sample) files with the same records, floats within :data:`FLOAT_TOL`."""
    rows = [[json.loads(line) for line in data.decode().splitlines()] for data in (a, b)]
    return numbers_close(rows[0], rows[1])


def run_in_process(config):
    from vat_hf.pipeline import ExperimentConfig, run_experiment

    return run_experiment(ExperimentConfig.from_dict(config), progress=False)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch threads: the children that :func:`faultkit.start` launches
    run with ``OMP_NUM_THREADS=1``, and on some CPUs (an AVX-512 Xeon here) float32 matrix products
    round differently with another thread count, so a run compared bit for bit with a child's
    work must use the child's."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A finished two-stage experiment (run in this process once): its folder and its files."""
    out = tmp_path_factory.mktemp("finished") / "out"
    run_in_process(experiment(tiny_model_dir, out))
    return out, files(out)


def copy_run(finished, to: Path, model_dir) -> Path:
    """The finished run copied to ``to`` with a recipe that points there (its cache is reused:
    the model's files are the same)."""
    shutil.copytree(finished[0], to)
    return write_yaml(to.parent / f"{to.name}.yaml", experiment(model_dir, to))


def same_results(rel, a: bytes, b: bytes, folders=()) -> bool:
    """Two versions of one result file that carry the same numbers (timing aside; ``folders``:
    output folders whose paths they may quote)."""
    texts = [data.decode() for data in (a, b)]
    for folder in sorted(map(str, folders), key=len, reverse=True):
        texts = [t.replace(folder, "<output_dir>") for t in texts]
    x, y = (json.loads(t) for t in texts)
    return all(numbers_close(x.get(key), y.get(key)) for key in ("vat", "summary", "pairs", "missing"))


def assert_intact(before, now, allow_new=(), folders=()):
    """Every file of ``before`` is still there and whole; deterministic ones byte for byte;
    result files with the same numbers (``folders``: see :func:`same_results`); and no file
    appeared that is not whole."""
    for rel, data in before.items():
        assert rel in now, f"{rel} was lost"
        assert whole(rel, now[rel]), f"{rel} is torn"
        if rel in DETERMINISTIC:
            assert now[rel] == data, f"{rel} changed"
        elif rel.endswith(".json") and not rel.startswith("cache/"):
            assert same_results(rel, data, now[rel], folders), f"{rel} carries other numbers"
    for rel in set(now) - set(before):
        assert whole(rel, now[rel]) and (now[rel] or rel in allow_new), f"new file {rel} is empty or torn"


# -- kill -9 ------------------------------------------------------------------------------------

def test_kill_9_at_random_points_of_judging_resumes_to_the_same_judgments(finished, tiny_model_dir, tmp_path):
    rng = random.Random(15)
    out = tmp_path / "out"
    recipe = write_yaml(tmp_path / "recipe.yaml", experiment(tiny_model_dir, out))
    total = 80  # 40 items judged by the baseline, 40 under the prompt: one cache line each
    for k in sorted(rng.sample(range(1, total), 2)):
        proc = start(["run", recipe], tmp_path / f"kill-{k}.log")
        reached = wait_for(lambda: cache_lines(out) >= k, proc)
        kill9(proc)
        assert reached, (tmp_path / f"kill-{k}.log").read_text()[-3000:]
        for rel, data in files(out).items():  # whatever was written is whole (a cache's torn last line aside)
            assert rel.startswith("cache/") or whole(rel, data), rel
    run_in_process(experiment(tiny_model_dir, out))
    now = files(out)
    for rel in DETERMINISTIC:  # the judged items met other batch companions: equal up to float rounding
        if rel.endswith(".jsonl"):
            assert now[rel] == finished[1][rel] or same_judgments(now[rel], finished[1][rel]), rel
    # Nothing from the killed runs is mixed in: the result is exactly the metric of the judgments on disk ...
    from vat_hf.io import read_json, read_jsonl, write_json
    from vat_hf.metrics.paired import score_judgments
    from vat_hf.pipeline import ExperimentConfig

    cfg = ExperimentConfig.from_yaml(recipe)
    result = json.loads(now["results/prompt-k2.json"])
    pre, post = (result["vat"]["pairing"][k] for k in ("pre", "post"))
    rescored = score_judgments(read_jsonl(pre), read_jsonl(post), cfg.target_value, seed=cfg.seed, pre_name=pre,
                               post_name=post, **cfg.metric.kwargs())
    assert result["vat"] == read_json(write_json(tmp_path / "rescored.json", rescored))
    # ... and it is the uninterrupted run's up to that rounding, which the tiny random model's gains
    # (about 1e-3) amplify in the ratios to about 1e-4 relative.
    x, y = (json.loads(data.decode().replace(str(folder), "<out>")) for data, folder in
            ((now["results/prompt-k2.json"], out), (finished[1]["results/prompt-k2.json"], finished[0])))
    assert all(numbers_close(x.get(k), y.get(k), tol=1e-3) for k in ("vat", "summary", "pairs", "missing"))
    keys = [json.loads(line)["key"] for p in out.glob("cache/judgments/*/part-*.jsonl") for line in p.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == total  # each item judged once: killed batches were lost, never doubled


def test_kill_9_while_the_report_is_written_loses_no_finished_result(finished, tiny_model_dir, tmp_path):
    rng = random.Random(16)
    out = tmp_path / "out"
    recipe = copy_run(finished, out, tiny_model_dir)
    before = files(out)
    for attempt in range(2):
        started = time.time()
        proc = start(["run", recipe], tmp_path / f"report-{attempt}.log")

        def writing_report():  # the first figure of this run has begun (its temporary file) or is written
            for p in (out / "report").iterdir():
                try:
                    if p.stat().st_mtime >= started:
                        return True
                except FileNotFoundError:  # a temporary file renamed away meanwhile
                    return True
            return False

        reached = wait_for(writing_report, proc, every=0.005)
        time.sleep(rng.uniform(0.0, 0.15))
        kill9(proc)
        assert reached
        assert_intact(before, files(out), folders=(finished[0], out))
    run_in_process(experiment(tiny_model_dir, out))
    assert_intact(before, files(out), folders=(finished[0], out))


def test_kill_9_during_training_resumes_to_the_same_adapter_and_a_changed_recipe_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from vat_hf.train import read_training_info

    rng = random.Random(17)
    training = write_yaml(tmp_path / "sft.yaml", TRAINING)

    def recipe(out, **overrides):
        return experiment(tiny_model_dir, out, interventions=[{"type": "sft", "name": "sft", "recipe": str(training),
                                                               "overrides": overrides}])

    reference = tmp_path / "reference"
    with torch_threads(1):  # the killed child's thread count: its steps 1..k and the resumed ones round alike
        run_in_process(recipe(reference))
    out = tmp_path / "out"
    shutil.copytree(reference / "cache", out / "cache")  # the baseline's judgments: the child goes straight to training
    step = rng.randint(1, TRAINING["max_steps"] - 1)
    proc = start(["run", write_yaml(tmp_path / "recipe.yaml", recipe(out))], tmp_path / "train.log")
    reached = wait_for(lambda: (out / "adapters" / "sft" / f"checkpoint-{step}").is_dir(), proc)
    time.sleep(rng.uniform(0.0, 0.3))  # anywhere in that checkpoint's save or the next step
    kill9(proc)
    assert reached and not (out / "adapters" / "sft" / "vat_training.json").exists()
    # Another recipe on that checkpoint is refused, before any weights are loaded, with the fix.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("vat_hf.train.common.load_base_model", lambda *a, **k: pytest.fail("loaded a model"))
        patch.setattr("vat_hf.models.load_model", lambda *a, **k: pytest.fail("loaded a model"))
        for key, value, shown in (("learning_rate", 1e-4, "learning_rate: 0.01 there, 0.0001 now"),
                                  ("lora_r", 8, "lora_r: 4 there, 8 now")):
            if not any((out / "adapters" / "sft").glob("checkpoint-*/vat_checkpoint.json")):
                break  # killed before the first checkpoint was whole: nothing to refuse
            result = invoke(["run", write_yaml(tmp_path / f"{key}.yaml", recipe(out, **{key: value}))])
            assert result.exit_code == 1 and "written by another training recipe" in result.output, result.output
            assert shown in result.output and "fix: restore those settings" in result.output
            assert len(result.output.strip().splitlines()) == 2  # was: 420 lines of size mismatch for lora_r
    with torch_threads(1):
        run_in_process(recipe(out))
    got, want = load_file(out / "adapters/sft/adapter_model.safetensors"), load_file(reference / "adapters/sft/adapter_model.safetensors")
    assert sorted(got) == sorted(want) and all((got[k] == want[k]).all() for k in got)
    info, ref_info = read_training_info(out / "adapters/sft"), read_training_info(reference / "adapters/sft")
    assert info["train_metrics"]["train_loss"] == pytest.approx(ref_info["train_metrics"]["train_loss"], rel=1e-6)
    assert info["train_metrics"]["global_step"] == TRAINING["max_steps"] and "train_loss_steps" not in info["train_metrics"]
    assert same_results("results/sft.json", (out / "results/sft.json").read_bytes(),
                        (reference / "results/sft.json").read_bytes(), (out, reference))


# -- torn and poisoned caches -------------------------------------------------------------------

def test_torn_and_poisoned_cache_lines_are_named_and_judged_again(finished, tiny_model_dir, tmp_path, caplog):
    out = tmp_path / "out"
    recipe = copy_run(finished, out, tiny_model_dir)
    part = next(p for p in out.glob("cache/judgments/*/part-0.jsonl")
                if json.loads((p.parent / "meta.json").read_text())["prompt"]["name"] == "baseline")
    lines = part.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    poison = {2: lambda e: e["out"].update(rating=99),                 # valid JSON, off the scale (was: accepted)
              5: lambda e: e["out"].update(probs=[0.5] * 5),           # not a distribution
              8: lambda e: e["out"].update(rating=e["out"]["rating"] + 0.5),  # not the mean of its distribution
              11: lambda e: e.update(key="0" * 64)}                    # a key of another item or namespace
    for number, change in poison.items():
        change(entries[number - 1])
    text = [json.dumps(e) for e in entries]
    text[13] = "this is not json"                                      # garbage
    part.write_text("\n".join(text[:-1]) + "\n" + text[-1][: len(text[-1]) // 2])  # and a torn last line
    with caplog.at_level("WARNING"):
        result = invoke(["run", recipe])
    assert result.exit_code == 0, result.output
    for number in (*poison, 14):
        assert f"{part}:{number}: ignoring a cache line" in caplog.text
    assert "rating 99 is outside the scale [1, 5]" in caplog.text and "cut a torn last line" in caplog.text
    evaluation = json.loads((out / "judgments" / "results_baseline.json").read_text())
    assert evaluation["stats"]["n_computed"] == 6  # the five bad lines and the torn one, judged again
    now = files(out)
    for rel in DETERMINISTIC:  # the six met other batch companions: judgments equal up to float rounding
        assert now[rel] == finished[1][rel] or (rel.endswith(".jsonl") and same_judgments(now[rel], finished[1][rel])), rel


# -- a full disk --------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs at tmp_path/disk (needs root with CAP_SYS_ADMIN: skipped where the system
    does not allow it); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill a disk ({done.stderr.strip() or done.returncode}); "
                    "run the suite as root (CAP_SYS_ADMIN) to play the full-disk faults")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def error_line(output: str) -> str:
    """The ``error: ...`` line of a command's output (progress bars may come before it)."""
    return next((line for line in output.splitlines() if line.startswith("error: ")), "")


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` but for about ``leave`` bytes."""
    import os

    filler = disk / "filler"
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(filler, "wb") as handle:
        handle.truncate(0)
        chunk = b"\0" * 65536
        remaining = max(0, free - leave)
        try:
            while remaining > 0:
                remaining -= handle.write(chunk[: min(len(chunk), remaining)])
            handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_names_the_file_and_loses_nothing_already_written(finished, tiny_model_dir, small_disk, tmp_path):
    # A first run that fills the disk while it judges: the message names the file; what it
    # wrote is whole; a second run, with space again, finishes to the same bytes.
    out = small_disk / "out"
    recipe = write_yaml(tmp_path / "recipe.yaml", experiment(tiny_model_dir, out))
    filler = fill(small_disk, 48 * 1024)
    result = invoke(["run", recipe])
    assert result.exit_code == 1 and error_line(result.output).startswith(f"error: no space left on the device of {out}/"), result.output
    assert "Traceback" not in result.output and "nothing already written was lost" in result.output
    for rel, data in files(out).items():
        assert whole(rel, data) and (data or rel.startswith("cache/")), rel  # nothing torn, no 0-byte result
    filler.unlink()
    run_in_process(experiment(tiny_model_dir, out))
    now = files(out)
    for rel in DETERMINISTIC:
        assert now[rel] == finished[1][rel], rel
    # Reruns of the finished run on a disk with ever less room, down to none: each fails naming
    # its file or finishes; nothing finished is lost or torn, no empty or partial figure appears.
    before = files(out)
    failed_on = []
    for leave in (256 * 1024, 64 * 1024, 16 * 1024, 0):
        filler = fill(small_disk, leave)
        result = invoke(["run", recipe])
        assert result.exit_code in (0, 1), result.output
        if result.exit_code:
            assert error_line(result.output).startswith(f"error: no space left on the device of {out}/"), result.output
            assert "Traceback" not in result.output
            failed_on.append(error_line(result.output).split(f"{out}/")[1].split(" ")[0])
        assert_intact(before, files(out))
        filler.unlink()
    # The disk filled while writing the judgments, the results and the report's figures in turn.
    assert len(failed_on) >= 3 and any(f.startswith("report/") for f in failed_on), failed_on


# -- two at once --------------------------------------------------------------------------------

def test_two_runs_on_one_output_dir_one_is_refused_naming_the_other(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    recipe = write_yaml(tmp_path / "recipe.yaml", experiment(tiny_model_dir, out))
    procs = [start(["run", recipe], tmp_path / f"run-{i}.log") for i in range(2)]
    codes = [finish(p) for p in procs]
    assert sorted(codes) == [0, 1], codes
    winner, loser = (procs[0], procs[1]) if codes[0] == 0 else (procs[1], procs[0])
    log = (tmp_path / f"run-{procs.index(loser)}.log").read_text()
    assert f"error: output_dir {out} is in use by another vat-hf process (pid {winner.pid} " in log, log
    assert "Traceback" not in log
    keys = [json.loads(line)["key"] for p in out.glob("cache/judgments/*/part-*.jsonl") for line in p.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 80  # was: every key twice


def test_two_trainers_on_one_adapter_folder_one_is_refused(tiny_model_dir, tmp_path):
    from vat_hf.train import read_training_info

    out = tmp_path / "adapter"
    # 12 steps: the winner is still training when the other, started at the same moment, reaches the lock.
    recipe = write_yaml(tmp_path / "sft.yaml", {**TRAINING, "max_steps": 12, "model_name_or_path": str(tiny_model_dir),
                                                "output_dir": str(out)})
    module = [__import__("sys").executable, "-m", "vat_hf.train.sft"]
    procs = [start(["--config", recipe, "--resume"], tmp_path / f"train-{i}.log", module=module) for i in range(2)]
    codes = [finish(p) for p in procs]
    assert sorted(codes) == [0, 1], [(tmp_path / f"train-{i}.log").read_text()[-2000:] for i in range(2)]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    log = (tmp_path / f"train-{loser}.log").read_text()
    assert f"error: training output_dir {out} is in use by another vat-hf process (pid {procs[winner].pid} " in log, log
    info = read_training_info(out)
    assert info["train_metrics"]["global_step"] == 12 and info["resumed_from"] is None


def test_two_evaluations_share_one_judgment_cache_safely(tiny_model_dir, tmp_path):
    cache = tmp_path / "cache"
    procs = [start(["eval", "--model", tiny_model_dir, "--max_scenes", "2", "--max_batch_size", "2", "--cache_dir", cache,
                    "--no_progress", "-o", tmp_path / f"j{i}.jsonl"], tmp_path / f"eval-{i}.log") for i in range(2)]
    assert [finish(p) for p in procs] == [0, 0], [(tmp_path / f"eval-{i}.log").read_text()[-2000:] for i in range(2)]
    assert (tmp_path / "j0.jsonl").read_bytes() == (tmp_path / "j1.jsonl").read_bytes()
    for part in cache.glob("judgments/*/part-*.jsonl"):
        data = part.read_bytes()
        assert data.endswith(b"\n")
        entries = read_jsonl_bytes(data)  # every line whole: no append cut or interleaved another's
        assert len({e["key"] for e in entries}) == 40 and all(e["out"]["mode"] == "logprob" for e in entries)


# -- secrets ------------------------------------------------------------------------------------

TOKEN = "hf_PLANTEDtokenNeverWritten0123456789abcd"


def test_a_planted_token_is_in_no_file_log_or_message(tiny_model_dir, tmp_path, caplog):
    training = write_yaml(tmp_path / "sft.yaml", {**TRAINING, "max_steps": 1, "save_steps": 1})
    out = tmp_path / "out"
    recipe = experiment(tiny_model_dir, out, interventions=[
        {"type": "sft", "name": "sft", "recipe": str(training), "overrides": {"hub_token": TOKEN}}])
    with caplog.at_level("INFO"):
        result = invoke(["-v", "run", write_yaml(tmp_path / "recipe.yaml", recipe)])
    assert result.exit_code == 0, result.output
    written = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert written == []  # was: config.json, results, vat_training.json, vat_recipe.yaml, training_args.bin
    assert json.loads((out / "config.json").read_text())["interventions"][0]["overrides"]["hub_token"] == "<redacted>"
    assert TOKEN not in result.output and TOKEN not in caplog.text
    # An error that quotes the overrides quotes them redacted.
    recipe["interventions"][0]["overrides"]["lerning_rate"] = 1e-4
    recipe["output_dir"] = str(tmp_path / "typo")
    result = invoke(["-v", "run", write_yaml(tmp_path / "typo.yaml", recipe)])
    assert result.exit_code == 1 and "unknown key(s) 'lerning_rate'" in result.output
    assert TOKEN not in result.output and "'hub_token': '<redacted>'" in result.output
