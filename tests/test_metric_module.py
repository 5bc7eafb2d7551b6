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
    # country and topic columns reach the core (two-way resampling through the module)
    n = len(cols["pre"])
    scene_no = [int(s[1:]) for s in cols["scene"]]
    crossed = dict(cols, country=[f"c{k % 4}" for k in scene_no], domain=[f"d{k // 4}" for k in scene_no])
    crossed.pop("micro_value")
    two_way = vat_metric.compute(**crossed, target_value="Benevolence", resample="two_way", n_bootstrap=30,
                                 n_subsamples=0)
    assert two_way == compute_vat(**crossed, target_value="Benevolence", resample="two_way", n_bootstrap=30,
                                  n_subsamples=0)
    assert two_way["n_units"] == {"scene": 12, "country": 4, "domain": 3} and n == two_way["n_items"] + 1


def test_bad_calls_name_the_field_and_never_poison_the_module(vat_metric):
    """A scene column mixing integers and strings used to fail with "invalid literal for int()"
    and leave the loaded module broken for every later call; any hashable ids now work, and a
    failing call raises a clear error and leaves the module as good as new."""
    cols = random_items(seed=4)
    cols.pop("micro_value")
    kwargs = dict(target_value="Benevolence", n_bootstrap=20, n_subsamples=0, n_permutations=0)
    mixed = dict(cols, scene=[int(s[1:]) if int(s[1:]) % 2 else s for s in cols["scene"]])  # 1, "s2", 3, ...
    got = vat_metric.compute(**mixed, **kwargs)
    assert got == compute_vat(**mixed, **kwargs) and got["n_scenes"] == 12
    # 1 and "1" are two scenes, not one
    clash = dict(cols, scene=[1 if s == "s1" else ("1" if s == "s2" else s) for s in cols["scene"]])
    assert vat_metric.compute(**clash, **kwargs)["n_scenes"] == 12
    bad_calls = [
        (dict(cols, polarity=[0] + cols["polarity"][1:]), "polarity: input 0 (counted from 0)"),
        (dict(cols, scene=[["s"]] + cols["scene"][1:]), "scene: input 0 (counted from 0)"),
        (dict(cols, pre=["high"] + cols["pre"][1:]), "pre: input 0 (counted from 0)"),
        (dict(cols, value=["Kindness"] + cols["value"][1:]), "value: input 0 (counted from 0)"),
        (dict(cols, scene=cols["scene"][:-1]), "differ in length"),
    ]
    for bad, match in bad_calls:
        with pytest.raises(ValueError, match=re.escape(match)) as err:
            vat_metric.compute(**bad, **kwargs)
        assert "fix:" in str(err.value)
        assert vat_metric.compute(**cols, **kwargs) == compute_vat(**cols, **kwargs)  # the next call works


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


@pytest.mark.filterwarnings("ignore::UserWarning")  # the card's unresolved example warns (VATWarning)
def test_metric_card_examples_run(monkeypatch):
    card = (VAT_MODULE_PATH / "README.md").read_text(encoding="utf-8")
    for section in ("## Metric Description", "## How to Use", "### Inputs", "### Output Values", "### Examples",
                    "## Limitations and Bias", "## Citation"):
        assert section in card
    blocks = "\n".join(b for b in re.findall(r"```python\n(.*?)```", card, flags=re.S) if ">>>" in b)
    _run_doctests(blocks, "README.md", monkeypatch)
