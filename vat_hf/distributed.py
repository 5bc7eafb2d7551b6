"""Ending a multi-process run (``accelerate launch``) without a hang at exit.

Every entry point that may run in several processes (``vat_hf.train.sft``/``dpo``,
``vat_hf.evaluate``) ends with :func:`end_distributed` instead of a bare
``accelerator.end_training()``.
"""

from __future__ import annotations

from typing import List

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
