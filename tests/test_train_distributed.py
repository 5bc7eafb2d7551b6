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


def _recipe(tmp_path, tiny_model_dir, **keys) -> Path:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model_name_or_path": str(tiny_model_dir), "target_value": "Benevolence", "output_dir": str(tmp_path / "out"),
        "use_cpu": True, "bf16": False, "activation_checkpointing": False, "use_peft": True, "lora_r": 4, "lora_alpha": 8,
        "lora_target_modules": "all-linear", "max_steps": 2, "per_device_train_batch_size": 1, "learning_rate": 1e-3,
        "save_strategy": "no", "report_to": "none", "max_scenes": 4, "disable_tqdm": True, **keys,
    }))
    return recipe


def _launch(config: Path, method: str, recipe: Path, *flags: str, port: int = None) -> list:
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch"] if launcher.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    return cmd + ["--config_file", str(config), "--main_process_port", str(port or _free_port()), *flags,
                  "-m", f"vat_hf.train.{method}", "--config", str(recipe)]


def _free_port() -> int:
    # A free rendezvous port: two launches at once (or a leftover worker) must not meet on 29500.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# No GPU for these tests even where there is one: CPU processes, as on a laptop or in CI.
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow  # two fresh processes per method, about 30 s each on 2 CPU cores
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_two_process_accelerate_launch(method, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, tiny_model_dir)
    # A worker that deadlocks at exit (see vat_hf.distributed) fails here instead of hanging the suite.
    proc = subprocess.run(_launch(TWO_PROCESSES, method, recipe), env=ENV, capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]  # a process that skips end_training aborts here
    info = read_training_info(out)
    assert info["distributed"] == {"type": "MULTI_CPU", "num_processes": 2}
    assert info["hyperparameters"]["world_size"] == 2 and info["train_metrics"]["global_step"] == 2
    assert (out / "adapter_model.safetensors").exists()


TWO_MACHINES = {"compute_environment": "LOCAL_MACHINE", "debug": False, "distributed_type": "MULTI_GPU",
                "downcast_bf16": "no", "main_process_ip": "127.0.0.1", "main_training_function": "main",
                "mixed_precision": "no", "num_machines": 2, "num_processes": 2, "rdzv_backend": "static",
                "same_network": True, "use_cpu": False}


@pytest.mark.slow  # two launchers, one process each, about 40 s on 2 CPU cores
def test_dpo_as_two_machines_on_loopback(tmp_path, tiny_model_dir):
    """The multi-node path: two `accelerate launch` (machine_rank 0 and 1, one process each)
    meeting at 127.0.0.1 train one DPO adapter together."""
    config = tmp_path / "two_machines.yaml"
    config.write_text(yaml.safe_dump(TWO_MACHINES))
    recipe, port = _recipe(tmp_path, tiny_model_dir), _free_port()
    procs = [subprocess.Popen(_launch(config, "dpo", recipe, "--machine_rank", str(rank), port=port), env=ENV, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outputs]
    info = read_training_info(tmp_path / "out")
    assert info["distributed"] == {"type": "MULTI_CPU", "num_processes": 2}
    assert info["hyperparameters"]["world_size"] == 2 and info["train_metrics"]["global_step"] == 2


@pytest.mark.slow  # two processes that stop at their first check, about 20 s
def test_processes_that_do_not_form_the_launched_run_are_refused_before_training(tmp_path, tiny_model_dir):
    """Was: `accelerate launch --config_file fsdp.yaml` with 2 processes and no GPU ran two
    independent, non-distributed trainings into one output_dir (each recording type NO, 1
    process), exit 0."""
    recipe = _recipe(tmp_path, tiny_model_dir, use_cpu=False)
    fsdp = REPO / "recipes" / "accelerate" / "fsdp.yaml"
    proc = subprocess.run(_launch(fsdp, "sft", recipe, "--num_processes", "2", "--quiet"), env=ENV, capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert ("error: the launcher started 2 processes (WORLD_SIZE=2), but training in this process is distributed type "
            "NO with 1 process(es)") in output, output[-3000:]
    assert "fix: on a machine without GPUs set use_cpu: true" in output
    assert not (tmp_path / "out").exists()
