"""Multi-process runs (``accelerate launch``): checked at the start, ended without a hang.

Every entry point that may run in several processes (``vat_hf.train.sft``/``dpo``,
``vat_hf.evaluate``) checks with :func:`check_launch` that its processes really form the
distributed run the launcher started (and refuses before any work otherwise), and ends with
:func:`end_distributed` instead of a bare ``accelerator.end_training()``.
"""

from __future__ import annotations

import os
from typing import List

from vat_hf.errors import VatHfError


class LaunchError(VatHfError, RuntimeError):
    """Processes started by a launcher that do not form the distributed run it started."""

# Handles of the last barrier of each run, alive until the process exits (see end_distributed).
_FINAL_BARRIERS: List[object] = []


def end_distributed(accelerator) -> None:
    """Wait for every process, then ``accelerator.end_training()`` (trackers finished, process
    group destroyed). A no-op wait in a single process.

    Why not ``wait_for_everyone()`` + ``end_training()``: with the gloo backend (CPU processes)
    that deadlocked at exit now and then, one process left running forever. A gloo barrier keeps
    references to the collectives still pending when it was issued (the trainer's metric
    all-gathers), and when the barrier's handle is freed they are freed with it, on a gloo worker
    thread; freeing a tensor that Python knows takes the GIL. After ``end_training`` the DDP
    reducer is the process group's last owner, and when it is freed the group's destructor, run on
    the main thread with the GIL held, joins the worker threads: if a worker is at that moment
    freeing such a barrier, each waits for the other. py-spy on a hung worker showed exactly that
    (``~ProcessGroupGloo`` -> ``std::thread::join`` on the main thread; ``~AsyncBarrierWork`` ->
    ``~AsyncAllgatherWork`` -> ``decref_pyobject`` -> ``gil_scoped_acquire`` on the worker), in 2
    of 5 two-process DPO runs on a loaded 2-core machine (none of 10 after). Issuing the last
    barrier ourselves and keeping its handle until the process exits means nothing Python-owned
    is freed on a worker thread from then on; the handle is freed at interpreter exit, on the
    main thread.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "gloo":
            work = dist.barrier(async_op=True)
            work.wait()
            _FINAL_BARRIERS.append(work)
        else:
            accelerator.wait_for_everyone()
    accelerator.end_training()


def launched_processes() -> int:
    """How many processes the launcher started (``WORLD_SIZE``, set by torchrun and
    ``accelerate launch``; 1 when not launched)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    except ValueError:
        return 1


def check_launch(distributed_type: str, num_processes: int, what: str = "this run", use_cpu: bool = False) -> None:
    """Refuse a run whose processes do not form the distributed run the launcher started: N
    processes launched (``WORLD_SIZE``) but the accelerator state of this one reports another
    number or no distribution (each would do all the work alone, into one output folder), or
    the accelerate config asked for FSDP/DeepSpeed and the state is another type (on CPUs,
    accelerate falls back to plain DDP).

    >>> check_launch("NO", 1)
    """
    launched = launched_processes()
    asked = next((kind for kind, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DEEPSPEED", "ACCELERATE_USE_DEEPSPEED"))
                  if os.environ.get(env, "").lower() in ("1", "true", "yes")), None)
    if launched > 1 and (num_processes != launched or distributed_type == "NO"):
        cpu_fix = ("" if use_cpu else "on a machine without GPUs set use_cpu: true (or --use_cpu true) so the processes "
                   "join over gloo, with recipes/accelerate/ddp_2proc.yaml; ")
        raise LaunchError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}), but {what} in this process is "
            f"distributed type {distributed_type} with {num_processes} process(es): the {launched} processes would "
            f"each do all the work, separately, into one output folder",
            fix=f"{cpu_fix}on GPUs check that every process sees its GPU (CUDA_VISIBLE_DEVICES) and that the "
                f"accelerate config's num_processes and num_machines match the machines")
    if asked and launched > 1 and distributed_type != asked:
        raise LaunchError(
            f"the accelerate config asks for {asked}, but {what} runs as {distributed_type} ({num_processes} processes)"
            + (": FSDP and DeepSpeed need GPUs" if distributed_type == "MULTI_CPU" else ""),
            fix="launch with a config of the type you mean: recipes/accelerate/ddp_2proc.yaml for processes on CPUs, "
                "fsdp.yaml or deepspeed_zero3.yaml on GPUs")
