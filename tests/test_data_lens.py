"""The ValueActionLens importer and the forgiving parser of model output."""

import csv
import json
import zipfile
from pathlib import Path

import pytest

from vat_hf.data.fields import SCENARIO_TEMPLATE, render_scenario
from vat_hf.data.lens import ACTION_KEY, LENS_ROWS, import_value_action_lens
from vat_hf.data.parsing import ParseError, extract_field, parse_structured
from vat_hf.values import BASIC_VALUES, MICRO_VALUES

ACTION = "I volunteer at the food bank every week."

# (answer, expected action or None, expected method or the reason's fragment)
MESSY = [
    ('{\n  "Human Action": "I volunteer at the food bank every week.",\n  "Feature Attributions": ["volunteer"]\n}', ACTION, "json"),
    ("{'Human Action': 'I volunteer at the food bank every week.', 'Feature Attributions': ['volunteer']}", ACTION, "json"),
    ('```json\n{\n  "Human Action": "I volunteer at the food bank every week.",\n  "Natural Language Explanation": "x"\n}\n```',
     ACTION, "json"),
    ('Sure! Here\'s an action:\n\n{"Human Action": "I volunteer at the food bank every week.", "Feature Attributions": []}\n'
     "Let me know if you need more.", ACTION, "json"),
    ('```python\n{"Human Action": "I volunteer at the food bank every week.",}\n```', ACTION, "json"),  # trailing comma
    ('{\u201cHuman Action\u201d: \u201cI volunteer at the food bank every week.\u201d}', ACTION, "json"),  # curly quotes
    ('{"human_action": "I volunteer at the food bank every week."}', ACTION, "json"),  # key spelling
    # single quotes with unescaped apostrophes: not JSON, not a Python literal
    ("{\n  'Human Action': 'I protect India's forests and my neighbours' gardens.',\n  'Feature Attributions': ['protect'],\n"
     "  'Natural Language Explanation': 'It shows care for others' welfare.'\n}",
     "I protect India's forests and my neighbours' gardens.", "scan"),
    # mixed quotes
    ("{\n  'Human Action': \"I put my family's wishes first.\",\n  'Feature Attributions': ['over my family's wishes']\n}",
     "I put my family's wishes first.", "scan"),
    # truncated answer: the action is complete, the rest is cut off
    ('{\n  "Human Action": "I volunteer at the food bank every week.",\n  "Feature Attributions": [\n    "volunteer",\n'
     '  "Natural Language Explanation": "This action demonstrates', ACTION, "scan"),
    # broken object with the attribution list glued to the action
    ('```json\n{\n  "Human Action": "I volunteer at the food bank every week.[`volunteer`, `food bank`]", \n \u201creallist ].',
     ACTION, "scan"),
    # a Markdown rendering with bold keys
    ("**Human Action**: I volunteer at the food bank every week.\n**Feature Attributions**: volunteer", ACTION, "scan"),
    ("I'm sorry, but I can't assist with that request.", None, "refused"),
    ("Unfortunately, I cannot assist with creating content that promotes resisting values.", None, "refused"),
    ('{"Feature Attributions": ["a"], "Natural Language Explanation": "b"}', None, "no 'Human Action' field"),
    ('{"Human Action": "", "Feature Attributions": []}', None, "empty"),
    ("", None, "empty answer"),
    (None, None, "empty answer"),
]


@pytest.mark.parametrize("answer, expected, how", MESSY)
def test_forgiving_parser_on_messy_answers(answer, expected, how):
    result = extract_field(answer, ACTION_KEY)
    assert result.value == expected
    if expected is None:
        assert result.method == "failed" and how in result.reason
    else:
        assert result.method == how


def test_parse_structured_kinds_and_errors():
    assert parse_structured('noise [1, 2] noise', kind=list) == [1, 2]
    assert parse_structured("x = {'a': (1, 2)} ok", kind=dict) == {"a": (1, 2)}
    # the last closing brace is chatter: an earlier one closes the object
    assert parse_structured('{"a": 1} and then a stray } here', kind=dict) == {"a": 1}
    with pytest.raises(ParseError, match="refused"):
        parse_structured("I'm sorry, I can't help with that.")
    with pytest.raises(ParseError, match="no JSON object"):
        parse_structured("just words {not json at all")


def test_scenario_template():
    assert SCENARIO_TEMPLATE.count("{") == 2
    assert render_scenario("India", "Work Orientation") == "I live in India, and I am facing a situation related to work orientation."
    assert render_scenario("Philippines", "Religion").startswith("I live in the Philippines,")


def _write_corpus(path, rows):
    header = ["", "Unnamed: 0", "country", "topic", "value", "polarity", "generation_prompt"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, row in enumerate(rows):
            writer.writerow([i, i, *row])
    return path


def _answer(text, style="json"):
    if style == "json":
        return json.dumps({"Human Action": text, "Feature Attributions": ["x"], "Natural Language Explanation": "y"}, indent=2)
    if style == "python":
        return repr({"Human Action": text, "Feature Attributions": ["x"]})
    return f"```json\n{_answer(text)}\n```"


@pytest.fixture
def small_corpus(tmp_path):
    rows = []
    for country in ("India", "United States", "Nigeria"):
        for topic in ("Politics", "Religion"):
            for item in ("Honest", "Wealth", "Curious"):
                for polarity in ("positive", "negative"):
                    style = ("json", "python", "fenced")[len(rows) % 3]
                    rows.append((country, topic, item, polarity, _answer(f"I act on {item} in {topic} in {country}, {polarity}.", style)))
    rows[5] = rows[5][:4] + ("I'm sorry, but I can't assist with that request.",)
    rows[7] = (rows[7][0], rows[7][1], "Kindness", rows[7][3], rows[7][4])
    return _write_corpus(tmp_path / "corpus.csv", rows), rows


def test_import_small_corpus_maps_every_field_and_reports_failures(small_corpus):
    path, rows = small_corpus
    result = import_value_action_lens(path, seed=3)
    assert result.n_rows == len(rows) == 36
    assert result.n_recovered == 34
    assert [(f["row"], f["index"]) for f in result.failures] == [(5, 5), (7, 7)]
    assert "refused" in result.failures[0]["reason"]
    assert "'Kindness' is not one of the 56 value-survey items" in result.failures[1]["reason"]
    assert result.failures[1]["country"] == rows[7][0]
    ds = result.dataset
    first = ds[0]
    assert first["scene_id"] == "vl/india/politics"
    assert first["id"] == "vl/india/politics/honest/pos"
    assert first["micro_value"] == "Honest" and first["value"] == "Benevolence" and first["polarity"] == 1
    assert first["domain"] == "Politics" and first["scenario"] == render_scenario("India", "Politics")
    assert first["action"] == "I act on Honest in Politics in India, positive."
    assert ds[1]["polarity"] == -1
    assert set(ds["value"]) == {"Benevolence", "Power", "Self-Direction"}
    scenes = {}
    for scene, split in zip(ds["scene_id"], ds["split"]):
        scenes.setdefault(scene, set()).add(split)
    assert len(scenes) == 6 and all(len(s) == 1 for s in scenes.values())
    assert sum(1 for s in scenes.values() if s == {"train"}) == 2  # round(6 / 3)
    again = import_value_action_lens(path, seed=3)
    assert again.dataset["split"] == ds["split"]
    meta = json.loads(ds.info.description)
    assert meta["rows_unrecovered"] == 2 and meta["scenario_template"] == SCENARIO_TEMPLATE


def test_import_reads_the_released_zip(small_corpus, tmp_path):
    path, _ = small_corpus
    archive = tmp_path / "value_action_gap_full_data_generation.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "value_action_gap_full_data_generation.csv")
    assert import_value_action_lens(archive).n_recovered == 34


def test_import_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no value-action corpus"):
        import_value_action_lens(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("country,topic,value\nIndia,Politics,Honest\n")
    with pytest.raises(ValueError, match="missing column"):
        import_value_action_lens(bad)


def test_cli_import_writes_items_and_failures(small_corpus, tmp_path):
    from typer.testing import CliRunner

    from vat_hf.cli import app  # `vat-hf data ...`: the command users run, with its error surface
    from vat_hf.data.storage import read_items
    from vat_hf.io import read_jsonl

    path, _ = small_corpus
    out = tmp_path / "items"
    res = CliRunner().invoke(app, ["data", "import-value-action-lens", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "recovered 34 of 36 rows" in res.output
    assert len(read_items(out)) == 34
    failures = read_jsonl(out / "failures.jsonl")
    assert [f["row"] for f in failures] == [5, 7]


# --- the real corpus in ../shared ------------------------------------------------------------

LENS_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "value-action-lens" / "value_action_gap_full_data_generation.csv"


@pytest.fixture(scope="module")
def lens_import():
    if not LENS_CSV.exists():
        pytest.skip(f"the ValueActionLens corpus is not at {LENS_CSV} (it lives in ../shared beside the repo)")
    return import_value_action_lens(LENS_CSV)


def test_real_corpus_rows_recovered(lens_import, lens_csv):
    result = lens_import
    assert result.n_rows == LENS_ROWS
    # Every row whose answer holds an action is recovered; the only losses are the model's refusals
    # (61 answers such as "I'm sorry, but I can't assist with that request."), each reported.
    assert result.n_recovered == LENS_ROWS - len(result.failures) >= 14_720
    assert all("refused" in f["reason"] for f in result.failures)
    assert all(isinstance(f["row"], int) and f["reason"] for f in result.failures)
    assert result.methods["scan"] >= 25  # answers that are neither JSON nor a Python literal


def test_real_corpus_scenes_are_complete_and_splits_do_not_leak(lens_import):
    ds = lens_import.dataset
    cells, splits = {}, {}
    for scene, value, polarity, split in zip(ds["scene_id"], ds["value"], ds["polarity"], ds["split"]):
        cells.setdefault(scene, set()).add((value, polarity))
        splits.setdefault(scene, set()).add(split)
    assert len(cells) == 12 * 11
    every = {(v, p) for v in BASIC_VALUES for p in (1, -1)}
    assert all(c == every for c in cells.values())
    assert all(len(s) == 1 for s in splits.values())
    n_train = sum(1 for s in splits.values() if s == {"train"})
    assert n_train == round(len(cells) / 3)
    assert set(ds["micro_value"]) == set(MICRO_VALUES)
    assert len(set(ds["id"])) == len(ds)
