"""The layer contract of docs/architecture.md, checked by import-linter (its contracts are in
pyproject.toml): the tree keeps it, and a new upward import or cycle breaks it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip("import-linter is not installed (it is in the test extra)")
    # lint-imports puts its working directory first on sys.path, so `root`'s vat_hf is the one read.
    return subprocess.run([str(exe), "--no-cache", "--no-logo", "pyproject.toml"], cwd=root, capture_output=True,
                          text=True, timeout=300)


def test_the_tree_keeps_the_layer_contract():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.fixture
def copy_of_tree(tmp_path):
    shutil.copytree(REPO / "vat_hf", tmp_path / "vat_hf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, line, broken", [
    # an upward import: a leaf module reaching for the pipeline
    ("io.py", "from vat_hf.pipeline import ExperimentConfig", "vat_hf.io -> vat_hf.pipeline"),
    # the cycle this contract replaced: training reaching up into the pipeline
    ("train/common.py", "from vat_hf.pipeline import RecipeError", "vat_hf.train.common -> vat_hf.pipeline"),
    # a function-level import counts as much as one at the top
    ("evaluation/task.py", "def _f():\n    from vat_hf.evaluation.judge import Evaluator", "vat_hf.evaluation.task -> vat_hf.evaluation.judge"),
    # the two backends stay apart
    ("evaluation/vllm_backend.py", "from vat_hf.evaluation.judge import left_pad", "vat_hf.evaluation.vllm_backend -> vat_hf.evaluation.judge"),
])
def test_an_upward_import_breaks_the_contract(copy_of_tree, module, line, broken):
    path = copy_of_tree / "vat_hf" / module
    path.write_text(path.read_text() + "\n\n" + line + "\n")
    proc = lint_imports(copy_of_tree)
    assert proc.returncode != 0 and "0 broken" not in proc.stdout, proc.stdout[-3000:]
    assert broken in proc.stdout


def test_a_new_module_must_be_placed_in_a_layer(copy_of_tree):
    (copy_of_tree / "vat_hf" / "helpers.py").write_text('"""A module nobody placed."""\n')
    proc = lint_imports(copy_of_tree)
    assert proc.returncode != 0 and "vat_hf.helpers" in proc.stdout, proc.stdout[-3000:]
