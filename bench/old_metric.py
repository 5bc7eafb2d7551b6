"""The VAT metric as it was before issue 12 (commit c330bd4), read from git, for side-by-side
benchmarks: ``load_old_compute_vat()`` returns its ``compute_vat`` or ``None`` (with the reason
printed) when git or the commit is not available, e.g. in a shallow clone."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "c330bd4"


def load_old_compute_vat():
    try:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:vat_hf/metrics/core.py"], check=True,
                             capture_output=True, text=True).stdout
        path = Path(tempfile.mkdtemp()) / "vat_core_before_issue12.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location("vat_core_before_issue12", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module.compute_vat
    except Exception as err:  # noqa: BLE001 - the comparison is optional
        print(f"(the metric of {OLD_COMMIT} is unavailable: {err})")
        return None
