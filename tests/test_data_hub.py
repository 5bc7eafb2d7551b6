"""Column-mapped loading from files of every format, and the captured Hub upload (no network)."""

import io
import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from vat_hf.data.fields import assign_splits, polarity_of
from vat_hf.data.hub import dataset_card, push_to_hub
from vat_hf.data.mapping import ColumnMapping, ColumnMappingError, load_mapped, map_items
from vat_hf.data.schema import FIELDS, ITEM_FEATURES, to_dataset
from vat_hf.data.storage import read_items, save_items

REPO = Path(__file__).resolve().parents[1]

# A foreign table: other column names, survey items, polarity as words, its own scenario column.
FOREIGN = [
    {"Country": "Kenya", "Topic": "Work", "Item": "Honest", "Label": "support", "Situation": "A shop owner in Nairobi finds a billing error in her favour.",
     "Act": "I call the supplier and point out the error."},
    {"Country": "Kenya", "Topic": "Work", "Item": "Honest", "Label": "violate", "Situation": "A shop owner in Nairobi finds a billing error in her favour.",
     "Act": "I keep quiet and pocket the difference."},
    {"Country": "Kenya", "Topic": "Work", "Item": "Wealth", "Label": "support", "Situation": "A shop owner in Nairobi finds a billing error in her favour.",
     "Act": "I invest the extra money in more stock."},
    {"Country": "Kenya", "Topic": "Work", "Item": "Wealth", "Label": "violate", "Situation": "A shop owner in Nairobi finds a billing error in her favour.",
     "Act": "I give the shop's profits away to strangers."},
    {"Country": "Peru", "Topic": "Family", "Item": "Obedient", "Label": "support", "Situation": "A teenager in Lima is told to skip a concert to help at home.",
     "Act": "I stay home as my parents ask."},
    {"Country": "Peru", "Topic": "Family", "Item": "Obedient", "Label": "violate", "Situation": "A teenager in Lima is told to skip a concert to help at home.",
     "Act": "I sneak out to the concert anyway."},
]
MAPPING = {"columns": {"country": "Country", "domain": "Topic", "value": "Item", "polarity": "Label", "scenario": "Situation",
                       "action": "Act"}}


def _write(tmp_path, fmt):
    ds = datasets.Dataset.from_list(FOREIGN)
    if fmt == "csv":
        path = tmp_path / "t.csv"
        ds.to_csv(path, index=False)
    elif fmt == "jsonl":
        path = tmp_path / "t.jsonl"
        ds.to_json(path, lines=True)
    elif fmt == "json":
        path = tmp_path / "t.json"
        path.write_text(json.dumps(FOREIGN))
    elif fmt == "parquet":
        path = tmp_path / "t.parquet"
        ds.to_parquet(path)
    else:
        path = tmp_path / "t_disk"
        datasets.DatasetDict({"train": ds.select(range(4)), "test": ds.select(range(4, 6))}).save_to_disk(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet", "disk"])
def test_column_mapping_on_each_format(tmp_path, fmt):
    items = load_mapped(_write(tmp_path, fmt), MAPPING)
    assert items.features == ITEM_FEATURES and len(items) == 6
    rows = sorted(items, key=lambda r: r["action"])
    honest = next(r for r in rows if r["action"].startswith("I call"))
    assert honest["value"] == "Benevolence" and honest["micro_value"] == "Honest" and honest["polarity"] == 1
    assert honest["country"] == "Kenya" and honest["domain"] == "Work"
    assert next(r for r in rows if r["action"].startswith("I keep"))["polarity"] == -1
    scenes = {r["scene_id"] for r in rows}
    assert len(scenes) == 2  # one per scenario text
    by_scene = {}
    for r in rows:
        by_scene.setdefault(r["scene_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_scene.values())
    assert len(set(items["id"])) == 6


def test_same_named_columns_need_no_mapping(tmp_path):
    rows = [{"country": r["Country"], "topic": r["Topic"], "value": r["Item"], "polarity": r["Label"], "scenario": r["Situation"],
             "action": r["Act"]} for r in FOREIGN]
    path = tmp_path / "near_schema.jsonl"
    datasets.Dataset.from_list(rows).to_json(path, lines=True)
    items = load_mapped(path, {"domain": "topic"})
    assert items[0]["domain"] == "Work" and items[0]["micro_value"] == "Honest" and len(items) == 6


def test_mapping_from_yaml_and_flags_agree(tmp_path):
    from vat_hf.data.cli import _mapping

    path = _write(tmp_path, "csv")
    recipe = tmp_path / "map.yaml"
    recipe.write_text(yaml.safe_dump(MAPPING))
    by_yaml = load_mapped(path, recipe)
    flags = [f"{k}={v}" for k, v in MAPPING["columns"].items()]
    by_flags = load_mapped(path, _mapping(None, flags))
    plain = load_mapped(path, MAPPING["columns"])  # a plain {field: column} dict, as recipes' data.columns
    assert by_yaml.to_list() == by_flags.to_list() == plain.to_list()


@pytest.mark.parametrize("spelling, expected", [
    (1, 1), (-1, -1), ("+1", 1), ("-1", -1), ("1", 1), (1.0, 1), ("positive", 1), ("Negative", -1),
    ("express", 1), ("suppress", -1), ("support", 1), ("VIOLATE", -1), ("pos", 1), ("neg", -1),
])
def test_polarity_spellings(spelling, expected):
    assert polarity_of(spelling) == expected


@pytest.mark.parametrize("bad", [0, 2, "maybe", True, None, ""])
def test_bad_polarity_names_the_accepted_spellings(bad):
    with pytest.raises(ValueError, match="positive/negative, express/suppress, support/violate"):
        polarity_of(bad)


def test_basic_values_or_survey_items(tmp_path):
    rows = [dict(r) for r in FOREIGN]
    rows[0]["Item"], rows[1]["Item"] = "benevolence", "Benevolence"
    path = tmp_path / "mixed.jsonl"
    datasets.Dataset.from_list(rows).to_json(path, lines=True)
    items = {r["action"]: r for r in load_mapped(path, MAPPING)}
    assert items["I call the supplier and point out the error."]["value"] == "Benevolence"
    assert items["I call the supplier and point out the error."]["micro_value"] is None
    assert items["I stay home as my parents ask."]["value"] == "Conformity"
    with pytest.raises(ColumnMappingError, match="is not a basic value"):
        load_mapped(path, {**MAPPING, "value_kind": "basic"})


def test_missing_column_is_named_with_the_available_ones(tmp_path):
    path = _write(tmp_path, "csv")
    bad = {"columns": {**MAPPING["columns"], "action": "Action Text"}}
    with pytest.raises(ColumnMappingError) as err:
        load_mapped(path, bad)
    message = str(err.value)
    assert "'Action Text'" in message and "'Act'" in message and "field 'action'" in message
    with pytest.raises(ColumnMappingError, match="no column is mapped to 'polarity'"):
        load_mapped(path, {"columns": {k: v for k, v in MAPPING["columns"].items() if k != "polarity"}})
    with pytest.raises(ColumnMappingError, match="scenario_template"):
        load_mapped(path, {"columns": {k: v for k, v in MAPPING["columns"].items() if k != "scenario"}})


def test_unmappable_values_name_column_row_and_spellings(tmp_path):
    rows = [dict(r) for r in FOREIGN]
    rows[3]["Label"] = "kind of"
    rows[4]["Item"] = "Kindness"
    path = tmp_path / "bad.parquet"
    datasets.Dataset.from_list(rows).to_parquet(path)
    with pytest.raises(ColumnMappingError) as err:
        load_mapped(path, MAPPING)
    message = str(err.value)
    assert message.startswith(f"{path}, row 4, column 'Label' (field 'polarity'): 'kind of' is not a polarity")
    assert "positive/negative" in message and "1 more rows fail" in message
    assert err.value.row == 3 and err.value.column == "Label"
    items, failures = load_mapped(path, {**MAPPING, "on_error": "skip"}, return_failures=True)
    assert len(items) == 4 and [f["row"] for f in failures] == [3, 4]
    assert failures[1]["column"] == "Item" and "56 value-survey items" in failures[1]["fix"]
    # an extra spelling makes row 3 mappable
    items = load_mapped(path, {**MAPPING, "on_error": "skip", "polarity_values": {"kind of": -1}})
    assert len(items) == 5


def test_template_scenes_and_seeded_splits(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "Situation"} for r in FOREIGN]
    path = tmp_path / "noscn.csv"
    datasets.Dataset.from_list(rows).to_csv(path, index=False)
    cols = {k: v for k, v in MAPPING["columns"].items() if k != "scenario"}
    spec = {"columns": cols, "scenario_template": "I live in {the_country}, and I am facing a situation related to {domain_lower}."}
    items = load_mapped(path, spec)
    assert items[0]["scenario"] == "I live in Kenya, and I am facing a situation related to work."
    assert load_mapped(path, spec)["split"] == items["split"]
    assert assign_splits(["a", "b", "c", "d", "e", "f"], seed=1) == assign_splits(["f", "e", "d", "c", "b", "a"], seed=1)
    splits = assign_splits([f"s{i}" for i in range(30)], seed=0)
    assert sum(1 for v in splits.values() if v == "train") == 10


def test_split_column_and_action_field(tmp_path):
    rows = [dict(r, Split="Training" if r["Country"] == "Kenya" else "Eval",
                 Act=json.dumps({"Human Action": r["Act"]})) for r in FOREIGN]
    path = tmp_path / "split.jsonl"
    datasets.Dataset.from_list(rows).to_json(path, lines=True)
    spec = {"columns": {**MAPPING["columns"], "split": "Split"}, "split_values": {"Training": "train", "Eval": "test"},
            "action_field": "Human Action"}
    items = load_mapped(path, spec)
    assert items[0]["split"] == "train" and items[5]["split"] == "test"
    assert items[0]["action"] == FOREIGN[0]["Act"]
    with pytest.raises(ColumnMappingError, match="'Training' is not a split"):
        load_mapped(path, {**spec, "split_values": {}})


def test_hub_ids_go_to_load_dataset(monkeypatch):
    """A Hub id is read with datasets.load_dataset (name, split, revision passed through); faked here."""
    seen = {}

    def fake_load_dataset(path, name=None, split=None, revision=None, **kwargs):
        seen.update(path=path, name=name, split=split, revision=revision)
        return datasets.DatasetDict({"train": datasets.Dataset.from_list(FOREIGN)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    items = load_mapped("someone/their-items", {**MAPPING, "config": "v2", "revision": "abc"})
    assert seen == {"path": "someone/their-items", "name": "v2", "split": None, "revision": "abc"}
    assert len(items) == 6


def test_tinyhope_recipe_is_a_valid_mapping():
    recipe = REPO / "recipes" / "data" / "tinyhope_value_alignment_tax.yaml"
    mapping = ColumnMapping.from_yaml(recipe)
    assert mapping.source == "Tinyhope/Value_Alignment_Tax"
    # a table shaped as the recipe expects maps cleanly
    rows = [{"country": r["Country"], "topic": r["Topic"], "value": r["Item"], "polarity": "positive" if r["Label"] == "support" else "negative",
             "scenario": r["Situation"], "action": r["Act"]} for r in FOREIGN]
    items, failures = map_items(datasets.Dataset.from_list(rows), mapping)
    assert len(items) == 6 and not failures
    assert ColumnMapping.from_yaml(REPO / "recipes" / "data" / "value_action_lens.yaml").action_field == "Human Action"


# --- saving, reading, the card and the captured upload ----------------------------------------

def _items():
    return load_mapped_items()


def load_mapped_items():
    rows = []
    for scene, split in (("s1", "train"), ("s2", "test"), ("s3", "test")):
        for value in ("Benevolence", "Power"):
            for polarity in (1, -1):
                rows.append({"id": f"{scene}/{value}/{polarity}", "scene_id": scene, "country": "Kenya", "domain": "Work",
                             "scenario": f"Scenario {scene}.", "action": f"I do {value} {polarity} in {scene}.", "value": value,
                             "micro_value": None, "polarity": polarity, "split": split})
    ds = to_dataset(rows)
    ds.info.description = json.dumps({"generator": "test-gen", "seed": 7, "sampling": {"temperature": 0.8}})
    return ds


@pytest.mark.parametrize("name", ["items.jsonl", "items.parquet", "items.csv", "items_folder"])
def test_save_and_read_items_round_trip(tmp_path, name):
    ds = _items()
    path = save_items(ds, tmp_path / name, metadata={"note": "x"}, failures=[{"row": 1, "reason": "r"}])
    back = read_items(path)
    assert back.to_list() == ds.to_list()
    sidecar = path / "vat_hf_metadata.json" if path.is_dir() else path.with_name("items.meta.json")
    meta = json.loads(sidecar.read_text())
    assert meta["seed"] == 7 and meta["note"] == "x"
    assert json.loads(back.info.description)["generator"] == "test-gen"


def test_dataset_card_loads_back_with_huggingface_hub(tmp_path):
    """The card is built with DatasetCardData; huggingface_hub and datasets read its metadata back."""
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    card = dataset_card(_items(), repo_id="me/items", license="cc-by-4.0")
    card.save(tmp_path / "README.md")
    back = DatasetCard.load(tmp_path / "README.md")
    data = back.data
    assert data.license == "cc-by-4.0" and data.language == ["en"] and data.pretty_name == "items"
    assert data.size_categories == ["n<1K"] and "vat-hf" in data.tags
    assert data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"},
                                                                     {"split": "test", "path": "data/test-*.parquet"}]}]
    info = DatasetInfosDict.from_dataset_card_data(data)["default"]
    assert info.features == ITEM_FEATURES
    assert {name: split.num_examples for name, split in info.splits.items()} == {"train": 4, "test": 8}
    assert all(split.num_bytes > 0 for split in info.splits.values())
    text = back.text
    for section in ("## Schema", "## Taxonomy", "## Construction", "## Splits", "## Licence", "## Citation"):
        assert section in text
    for field in FIELDS:
        assert f"`{field}`" in text
    assert "Universalism" in text and "test-gen" in text and "chen2026valuealignmenttax" in text
    assert "| train | 4 | 1 |" in text and "| test | 8 | 2 |" in text


class Capture:
    """Stands in for the huggingface_hub.HfApi methods push_to_hub calls; records, never connects."""

    def __init__(self, monkeypatch, existing=()):
        import huggingface_hub
        from huggingface_hub import HfApi

        self.calls = []
        self.operations = []
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        capture = self

        def create_repo(api, repo_id, **kw):
            capture.calls.append(("create_repo", repo_id, kw))
            return huggingface_hub.RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

        def list_repo_files(api, repo_id, **kw):
            capture.calls.append(("list_repo_files", repo_id, kw))
            return list(existing)

        def create_commit(api, repo_id, operations, **kw):
            capture.calls.append(("create_commit", repo_id, kw))
            capture.operations = list(operations)
            return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/datasets/{repo_id}/commit/0", commit_message=kw["commit_message"],
                                              commit_description="", oid="0" * 40)

        def refuse(api, *a, **kw):  # anything else would reach the network
            raise AssertionError(f"unexpected Hub call {a} {kw}")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "list_repo_files", list_repo_files)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        for name in ("upload_file", "upload_folder", "preupload_lfs_files", "create_branch", "repo_info"):
            monkeypatch.setattr(HfApi, name, refuse)

    def files(self):
        from huggingface_hub import CommitOperationAdd

        out = {}
        for op in self.operations:
            if isinstance(op, CommitOperationAdd):
                content = op.path_or_fileobj
                out[op.path_in_repo] = content if isinstance(content, bytes) else Path(content).read_bytes()
        return out


def test_push_to_hub_is_captured_offline(monkeypatch):
    from huggingface_hub import CommitOperationDelete

    cap = Capture(monkeypatch, existing=[".gitattributes", "README.md", "data/train-00000-of-00002.parquet"])
    ds = _items()
    result = push_to_hub(ds, "me/vat-items", license="mit", private=True)
    assert [c[0] for c in cap.calls] == ["create_repo", "list_repo_files", "create_commit"]
    assert cap.calls[0][2] == {"repo_type": "dataset", "exist_ok": True, "private": True}
    assert cap.calls[2][2]["repo_type"] == "dataset"
    files = cap.files()
    assert sorted(files) == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
                             "vat_hf_metadata.json"]
    deleted = [op.path_in_repo for op in cap.operations if isinstance(op, CommitOperationDelete)]
    assert deleted == ["data/train-00000-of-00002.parquet"] == result.deleted
    for split in ("train", "test"):
        back = datasets.Dataset(pq.read_table(io.BytesIO(files[f"data/{split}-00000-of-00001.parquet"])))
        assert back.to_list() == [r for r in ds.to_list() if r["split"] == split]
        assert back.features == ITEM_FEATURES
    card = files["README.md"].decode()
    assert card == result.card and "license: mit" in card and "## Quality checks" in card
    meta = json.loads(files["vat_hf_metadata.json"])
    assert meta["generator"] == "test-gen" and meta["seed"] == 7 and meta["quality"]["ok"] is True
    assert meta["item_id_version"] == 2 and "| `item_id_version` | 2 |" in card


def test_push_refuses_a_leaky_set(monkeypatch):
    from vat_hf.data.schema import ItemValidationError

    Capture(monkeypatch)
    rows = _items().to_list()
    rows[0]["split"] = "test"  # scene s1 now in both splits
    with pytest.raises(ItemValidationError, match="both"):
        push_to_hub(rows, "me/vat-items")


def test_cli_push_dry_run_and_captured(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from vat_hf.cli import app  # `vat-hf data ...`: the command users run, with its error surface

    saved = save_items(_items(), tmp_path / "items.jsonl")
    runner = CliRunner()
    res = runner.invoke(app, ["data", "push", str(saved), "me/vat-items", "--dry-run", str(tmp_path / "upload")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "upload" / "README.md").exists() and (tmp_path / "upload" / "data" / "test-00000-of-00001.parquet").exists()
    # what load_dataset(repo_id) would read: the card's configs map each split to its file
    uploaded = datasets.load_dataset(str(tmp_path / "upload"), cache_dir=str(tmp_path / "cache"))
    assert sorted(uploaded) == ["test", "train"] and uploaded["train"].features == ITEM_FEATURES
    assert uploaded["train"].to_list() + uploaded["test"].to_list() == read_items(saved).to_list()
    cap = Capture(monkeypatch)
    res = runner.invoke(app, ["data", "push", str(saved), "me/vat-items", "--license", "mit"])
    assert res.exit_code == 0, res.output
    assert "README.md" in cap.files() and "pushed to https://huggingface.co/datasets/me/vat-items" in res.output


def test_cli_load_with_flags(tmp_path):
    from typer.testing import CliRunner

    from vat_hf.cli import app  # `vat-hf data ...`: the command users run, with its error surface

    path = _write(tmp_path, "csv")
    out = tmp_path / "mapped.jsonl"
    args = ["load", str(path), "-o", str(out)] + sum((["--map", f"{k}={v}"] for k, v in MAPPING["columns"].items()), [])
    res = CliRunner().invoke(app, ["data", *args])
    assert res.exit_code == 0, res.output
    assert len(read_items(out)) == 6
    res = CliRunner().invoke(app, ["data", "load", str(path), "-o", str(out), "--map", "country=Nation"])
    assert res.exit_code == 1 and "Nation" in res.output
