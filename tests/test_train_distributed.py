"""The two-process accelerate run: the same code as on several GPUs, here as two gloo CPU processes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vat_hf.train import read_training_info

REPO = Path(__file__).resolve().parents[1]
TWO_PROCESSES = REPO / "recipes" / "accelerate" / "ddp_2proc.yaml"


@pytest.mark.slow  # two fresh processes per method, about 30 s each on 2 CPU cores
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_two_process_accelerate_launch(method, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "target_value": "Benevolence", "output_dir": str(out),
        "use_cpu": True, "bf16": False, "activation_checkpointing": False, "use_peft": True, "lora_r": 4, "lora_alpha": 8,
        "lora_target_modules": "all-linear", "max_steps": 2, "per_device_train_batch_size": 1, "learning_rate": 1e-3,
        "save_strategy": "no", "report_to": "none", "max_scenes": 4, "disable_tqdm": True,
    }))
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher)] if launcher.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    if launcher.exists():
        cmd.append("launch")
    # A free rendezvous port: two launches at once (or a leftover worker) must not meet on 29500.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd += ["--config_file", str(TWO_PROCESSES), "--main_process_port", str(port), "-m", f"vat_hf.train.{method}",
            "--config", str(recipe)]
    # No GPU for this test even where there is one: two CPU processes, as on a laptop or in CI.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    # A worker that deadlocks at exit (see vat_hf.distributed) fails here instead of hanging the suite.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]  # a process that skips end_training aborts here
    info = read_training_info(out)
    assert info["distributed"] == {"type": "MULTI_CPU", "num_processes": 2}
    assert info["hyperparameters"]["world_size"] == 2 and info["train_metrics"]["global_step"] == 2
    assert (out / "adapter_model.safetensors").exists()
