"""Data-parallel evaluation: ``accelerate launch -m vat_hf.evaluate`` with 2 CPU processes equals
the single-process run, item for item, in the original order."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vat_hf.io import read_json, read_jsonl

ACCELERATE_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_processes: 2
num_machines: 1
machine_rank: 0
mixed_precision: 'no'
gpu_ids: all
rdzv_backend: static
same_network: true
use_cpu: false
main_process_port: {port}
"""


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "VAT_HF_CACHE": os.environ.get("VAT_HF_CACHE", str(Path.home() / ".cache" / "vat-hf"))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_two_process_accelerate_run_equals_single_process(tiny_model_dir, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    if not accelerate.exists() and shutil.which("accelerate") is None:
        pytest.skip("the accelerate launcher is not installed")
    config = tmp_path / "accelerate_2proc.yaml"
    config.write_text(ACCELERATE_CONFIG.format(port=_free_port()))
    common = ["--model", str(tiny_model_dir), "--data", "builtin", "--max-scenes", "3", "--dtype", "float32",
              "--target-value", "Benevolence", "--k-shots", "2", "--max-batch-size", "4", "--no-progress", "--log-samples"]
    _run([sys.executable, "-m", "vat_hf.evaluate", "-o", str(tmp_path / "single.jsonl"), "--no-cache", *common], tmp_path)
    launcher = [str(accelerate)] if accelerate.exists() else ["accelerate"]
    cache = tmp_path / "cache"
    _run([*launcher, "launch", "--config_file", str(config), "-m", "vat_hf.evaluate",
          "-o", str(tmp_path / "multi.jsonl"), "--cache-dir", str(cache), *common], tmp_path)

    single, multi = read_jsonl(tmp_path / "single.jsonl"), read_jsonl(tmp_path / "multi.jsonl")
    assert len(single) == 60 and [r["id"] for r in multi] == [r["id"] for r in single]
    for a, b in zip(single, multi):
        assert b["probs"] == pytest.approx(a["probs"], abs=1e-5)
        assert b["option_mass"] == pytest.approx(a["option_mass"], rel=1e-4)
        assert b["argmax"] == a["argmax"] and b["mode"] == a["mode"] == "logprob"
        assert {k: v for k, v in b.items() if k not in ("probs", "option_mass", "rating", "option_logprobs")} == \
               {k: v for k, v in a.items() if k not in ("probs", "option_mass", "rating", "option_logprobs")}
    results = read_json(tmp_path / "results_multi.json")
    assert results["world_size"] == 2 and len(results["stats"]["per_process"]) == 2
    assert all(s["n_computed"] > 20 for s in results["stats"]["per_process"])  # both processes worked
    assert results["versions"]["torch"] and results["seed"] == 0 and results["prompt"]["fingerprint"]
    # Each process wrote its own part of the judgment cache.
    assert sorted(p.name for p in cache.glob("judgments/*/part-*.jsonl")) == ["part-0.jsonl", "part-1.jsonl"]
    samples, single_samples = read_jsonl(tmp_path / "samples_multi.jsonl"), read_jsonl(tmp_path / "samples_single.jsonl")
    assert [s["doc_id"] for s in samples] == list(range(60))
    assert [(s["item"], s["prompt_hash"]) for s in samples] == [(s["item"], s["prompt_hash"]) for s in single_samples]

    # Restarted with the same command, the 2-process run computes nothing.
    proc = _run([*launcher, "launch", "--config_file", str(config), "-m", "vat_hf.evaluate",
                 "-o", str(tmp_path / "multi.jsonl"), "--cache-dir", str(cache), *common], tmp_path)
    again = read_json(tmp_path / "results_multi.json")
    assert again["stats"]["n_computed"] == 0 and again["stats"]["n_cached"] == 60
    assert read_jsonl(tmp_path / "multi.jsonl") == multi
