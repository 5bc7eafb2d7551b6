"""The evaluate module vat_hf/metrics/vat: loads offline from its folder, equals the core, and
its documented examples (module docstring and metric card) run as written."""

import doctest
import re
from pathlib import Path

import numpy as np
import pytest

from vat_hf.metrics import VAT_MODULE_PATH, compute_vat
from vat_hf.values import BASIC_VALUES, MICRO_VALUES

REPO = Path(__file__).resolve().parents[1]

evaluate = pytest.importorskip("evaluate")


@pytest.fixture(scope="module")
def vat_metric():
    return evaluate.load(str(VAT_MODULE_PATH))


def random_items(seed=0, n_scenes=12):
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("pre", "post", "value", "polarity", "scene", "micro_value")}
    for s in range(n_scenes):
        for v in BASIC_VALUES:
            for pol in (1, -1):
                pre = float(rng.integers(1, 6))
                post = float(np.clip(pre + pol * (1.0 if v == "Benevolence" else 0.0) + rng.integers(-1, 2), 1, 5))
                cols["pre"].append(pre)
                cols["post"].append(post)
                cols["value"].append(v)
                cols["polarity"].append(pol)
                cols["scene"].append(f"s{s}")
                cols["micro_value"].append(next(m for m, b in MICRO_VALUES.items() if b == v))
    cols["pre"][0] = None  # one missing judgment
    return cols


def test_module_equals_core(vat_metric):
    cols = random_items()
    kwargs = dict(target_value="benevolence", n_bootstrap=50, seed=3, n_subsamples=10)
    core = compute_vat(**{k: v for k, v in cols.items() if k != "micro_value"}, **kwargs)
    via_module = vat_metric.compute(**{k: v for k, v in cols.items() if k != "micro_value"}, **kwargs)
    assert via_module == core
    assert via_module["n_dropped"] == 1 and via_module["gain"] > 0
    # micro level through the module, micro_value given
    micro = vat_metric.compute(**cols, target_value="Benevolence", level="micro", n_bootstrap=0, n_subsamples=0)
    assert micro == compute_vat(**cols, target_value="Benevolence", level="micro", n_bootstrap=0, n_subsamples=0)
    assert micro["level"] == "micro"


def test_module_accepts_integer_scenes_and_batches(vat_metric):
    cols = random_items(seed=1)
    cols.pop("micro_value")
    as_int = dict(cols, scene=[int(s[1:]) for s in cols["scene"]])
    a = vat_metric.compute(**as_int, target_value="Benevolence", n_bootstrap=0)
    for k in range(0, len(cols["pre"]), 100):  # add_batch in chunks, then compute
        vat_metric.add_batch(**{c: v[k:k + 100] for c, v in cols.items()})
    b = vat_metric.compute(target_value="Benevolence", n_bootstrap=0)
    assert a["gain"] == pytest.approx(b["gain"]) and a["drift"] == pytest.approx(b["drift"])
    assert a["coupling"] == b["coupling"]  # scene ids differ in type only


def test_module_requires_target(vat_metric):
    cols = random_items(seed=2)
    with pytest.raises(ValueError, match="target_value"):
        vat_metric.compute(**cols)


def _run_doctests(text, name, monkeypatch):
    monkeypatch.chdir(REPO)  # the examples load "vat_hf/metrics/vat" relative to the repository
    test = doctest.DocTestParser().get_doctest(text, {"evaluate": evaluate}, name, None, 0)
    assert test.examples, f"no examples in {name}"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0 and result.attempted == len(test.examples)


def test_kwargs_description_examples_run(vat_metric, monkeypatch):
    assert "Examples:" in vat_metric.inputs_description
    _run_doctests(vat_metric.inputs_description, "vat._KWARGS_DESCRIPTION", monkeypatch)


@pytest.mark.filterwarnings("ignore:gain on the target")  # the card's zero-gain example warns
def test_metric_card_examples_run(monkeypatch):
    card = (VAT_MODULE_PATH / "README.md").read_text(encoding="utf-8")
    for section in ("## Metric Description", "## How to Use", "### Inputs", "### Output Values", "### Examples",
                    "## Limitations and Bias", "## Citation"):
        assert section in card
    blocks = "\n".join(b for b in re.findall(r"```python\n(.*?)```", card, flags=re.S) if ">>>" in b)
    _run_doctests(blocks, "README.md", monkeypatch)
