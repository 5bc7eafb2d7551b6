"""Shared pieces of the fault suite (tests/test_faults_*.py): small recipes on the tiny random
model, the command line in this process or in a child process that can be killed with
SIGKILL, waiting for an event in the files of a run, and reading a run's files back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "TOKENIZERS_PARALLELISM": "false"}
VAT_HF = [sys.executable, "-m", "vat_hf.cli"]


def experiment(model_dir, output_dir, **keys) -> Dict:
    """A two-stage experiment (baseline + a 2-shot prompt) on 2 scenes (40 items) of the tiny
    model, in batches of 4 (so judging appends to the cache in many steps)."""
    config = {"name": "faults", "model": str(model_dir), "target_value": "Benevolence", "output_dir": str(output_dir),
              "seed": 0, "data": {"max_scenes": 2},
              "eval": {"dtype": "float32", "device": "cpu", "max_batch_size": 4, "progress": False},
              "metric": {"n_bootstrap": 50, "n_sign_flips": 100},
              "interventions": [{"type": "prompt", "name": "prompt-k2", "k_shots": 2}]}
    for key, value in keys.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


TRAINING = dict(target_value="Benevolence", use_cpu=True, bf16=False, activation_checkpointing=False, use_peft=True,
                lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules="all-linear", max_steps=4,
                per_device_train_batch_size=2, learning_rate=1e-2, lr_scheduler_type="constant", logging_steps=1,
                save_strategy="steps", save_steps=1, report_to="none", max_scenes=2, seed=0, disable_tqdm=True)


def write_yaml(path: Path, config) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def invoke(args: List[str]):
    """``vat-hf ARGS`` in this process (typer's runner: exit code and the output a user sees)."""
    from typer.testing import CliRunner

    from vat_hf.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def start(args: List[str], log: Path, module: Optional[List[str]] = None) -> subprocess.Popen:
    """``vat-hf ARGS`` (or ``python -m MODULE ARGS``) as a child process with its own process
    group, output to ``log``."""
    command = (module or VAT_HF) + [str(a) for a in args]
    handle = open(log, "wb")
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill9(proc)
        raise


def kill9(proc: subprocess.Popen) -> None:
    """SIGKILL to the child (nothing it could catch or clean up after), and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def wait_for(event: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300, every: float = 0.01) -> bool:
    """Poll ``event`` until it holds (True) or the child exits or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if event():
            return True
        if proc.poll() is not None:
            return event()
        time.sleep(every)
    return False


def cache_lines(output_dir: Path) -> int:
    """Complete lines in every part file of a run's judgment cache."""
    total = 0
    for part in Path(output_dir).glob("cache/judgments/*/part-*.jsonl"):
        try:
            total += part.read_bytes().count(b"\n")
        except OSError:
            pass
    return total


def files(folder: Path, hidden: bool = False) -> Dict[str, bytes]:
    """Every file under ``folder`` by relative path (lock files and, unless ``hidden``, the
    dot-files an atomic write leaves behind when killed mid-write: never read by vat-hf)."""
    out = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or path.name.endswith(".lock") or ".vat-hf.lock" in path.name:
            continue
        if not hidden and any(part.startswith(".") for part in rel.parts):
            continue
        out[str(rel)] = path.read_bytes()
    return out


def read_jsonl_bytes(data: bytes) -> List[dict]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def whole(rel: str, data: bytes) -> bool:
    """Whether a file's bytes are a complete file of its kind (JSON, JSON lines, PNG, text)."""
    if rel.endswith(".json"):
        json.loads(data)
    elif rel.endswith(".jsonl"):
        if data and not data.endswith(b"\n"):
            return False
        read_jsonl_bytes(data)
    elif rel.endswith(".png"):
        return data.startswith(b"\x89PNG\r\n\x1a\n") and data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82")
    elif rel.endswith((".md", ".html")):
        return len(data) > 0
    return True
