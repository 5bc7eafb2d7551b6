"""Provenance: what every vat-hf result file carries so that a number can be traced and rerun.

:func:`provenance` is the one builder; the evaluation results (``results_<name>.json``), the
per-intervention results of ``vat-hf run`` (``results/<name>.json``) and the training record of
an adapter (``vat_training.json``, its versions) all take their provenance block from here, in
the manner of lm-evaluation-harness's results file (``config``, ``versions``, ``date``, timing,
seeds, git hash).

A leaf module: callers pass what they know (the config, the seed, the data fingerprint from
:func:`vat_hf.data.items_fingerprint`, the model/adapter/prompt fingerprints), so it imports
nothing of vat-hf.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

PACKAGES = ("vat-hf", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "evaluate", "huggingface_hub",
            "numpy", "scipy")
PROVENANCE_KEYS = ("date", "timing", "versions", "platform", "git_commit", "seed", "config", "data", "fingerprints")
"""The keys :func:`provenance` puts at the top level of a result file."""


def package_versions() -> Dict[str, Optional[str]]:
    """Python's version and each of :data:`PACKAGES`' installed versions (None if absent)."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """The commit of the vat-hf checkout this code runs from (None when installed from a wheel or
    when git is unavailable): the package version alone does not say which code made a number."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def provenance(*, config: Mapping[str, Any], seed: int, data: Mapping[str, Any], fingerprints: Mapping[str, Any],
               started: float, finished: Optional[float] = None) -> Dict[str, Any]:
    """The provenance block of a result file (its keys are :data:`PROVENANCE_KEYS`).

    ``config``: the full configuration that produced the result; ``seed``: the seed of every
    random choice (scene sample, demonstrations, bootstrap); ``data``: what was judged, with its
    ``fingerprint`` (:func:`vat_hf.data.items_fingerprint`); ``fingerprints``: the model, adapter,
    prompt and scoring fingerprints; ``started``/``finished``: ``time.time()`` stamps.

    >>> p = provenance(config={"k": 1}, seed=0, data={"fingerprint": "ab"}, fingerprints={"prompt": "cd"},
    ...                started=0.0, finished=1.5)
    >>> sorted(p) == sorted(PROVENANCE_KEYS), p["timing"], p["versions"]["python"] == platform.python_version()
    (True, {'started': '1970-01-01T00:00:00+00:00', 'finished': '1970-01-01T00:00:01+00:00', 'seconds': 1.5}, True)
    """
    finished = time.time() if finished is None else finished
    return {
        "date": _iso(finished),
        "timing": {"started": _iso(started), "finished": _iso(finished), "seconds": finished - started},
        "versions": package_versions(),
        "platform": {"system": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "git_commit": git_commit(),
        "seed": seed,
        "config": dict(config),
        "data": dict(data),
        "fingerprints": dict(fingerprints),
    }
