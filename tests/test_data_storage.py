"""One storage module: every entry point accepts the same sources; saves are atomic; errors name the source."""

import bz2
import gzip
import json
import os
import pickle
import zipfile

import datasets
import pytest
from typer.testing import CliRunner

from vat_hf.data import load_builtin, load_items
from vat_hf.cli import app  # `vat-hf data ...`: the command users run, with its error surface
from vat_hf.data.hub import push_to_hub
from vat_hf.data.schema import ItemValidationError, to_dataset
from vat_hf.data.storage import read_items, read_metadata, save_items

ITEMS = load_builtin()[:40]  # two scenes, 20 items each


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


def _csv(rows):
    path_free = datasets.Dataset.from_list(rows)
    return "".join(path_free.to_pandas().to_csv(index=False))


def _make(tmp_path, form):
    """A source of ITEMS in one of the forms a user might hand to `vat-hf data check` or `vat-hf eval`."""
    ds = to_dataset(ITEMS)
    p = tmp_path / form
    if form == "items.jsonl":
        p.write_text(_jsonl(ITEMS))
    elif form == "items.json":
        p.write_text(json.dumps(ITEMS))
    elif form == "items.csv":
        ds.to_csv(p, index=False)
    elif form in ("items.parquet", "items.pq"):
        ds.to_parquet(p)
    elif form == "items.jsonl.gz":
        p.write_bytes(gzip.compress(_jsonl(ITEMS).encode()))
    elif form == "items.csv.bz2":
        p.write_bytes(bz2.compress(_csv(ITEMS).encode()))
    elif form == "items.zip":
        with zipfile.ZipFile(p, "w") as archive:
            archive.writestr("items.csv", _csv(ITEMS))
    elif form == "saved_dataset":
        ds.save_to_disk(p)
    elif form == "saved_dataset_dict":
        datasets.DatasetDict({s: ds.filter(lambda r, s=s: r["split"] == s) for s in ("train", "test")}).save_to_disk(p)
    elif form == "hub_layout":  # what `vat-hf data push --dry-run` writes: README.md + data/<split>-*.parquet
        push_to_hub(ds, "me/items", dry_run_dir=p)
    elif form == "folder_of_files":
        p.mkdir()
        (p / "part-0.jsonl").write_text(_jsonl(ITEMS[:20]))
        (p / "part-1.jsonl").write_text(_jsonl(ITEMS[20:]))
    elif form == "items.txt":
        p.write_text(_jsonl(ITEMS))
    elif form == "not_schema.jsonl":
        p.write_text(_jsonl([{"text": "hello", "label": 1}]))
    elif form == "build_folder":  # a `vat-hf data build` output: the items are one file inside it
        save_items(ds, p / "items.jsonl", failures=[{"row": 1, "reason": "r"}])
        (p / "stage1").mkdir()
        (p / "build.json").write_text("{}")
    elif form == "empty_folder":
        p.mkdir()
    elif form == "missing.jsonl":
        pass
    elif form == "./missing_folder":
        p = tmp_path / "missing_folder"
    return p


GOOD = ["items.jsonl", "items.json", "items.csv", "items.parquet", "items.pq", "items.jsonl.gz", "items.csv.bz2", "items.zip",
        "saved_dataset", "saved_dataset_dict", "hub_layout", "folder_of_files"]
BAD = ["items.txt", "not_schema.jsonl", "build_folder", "empty_folder", "missing.jsonl", "./missing_folder"]


@pytest.mark.parametrize("form", GOOD + BAD)
def test_data_check_and_load_items_accept_the_same_sources(tmp_path, form):
    """`vat-hf data check` and load_items (so `vat-hf eval`, `vat-hf run`, training) read through one module:
    a source one accepts the other accepts, with the same items; one one refuses the other refuses.
    (The *content* is judged differently on purpose: check reports problems such as split leakage,
    load_items refuses them.)"""
    source = str(_make(tmp_path, form))
    checked = CliRunner().invoke(app, ["data", "check", source])
    try:
        loaded, refusal = load_items(source), None
    except (ValueError, FileNotFoundError) as err:
        loaded, refusal = None, err
    assert (checked.exit_code == 0) == (refusal is None), (form, checked.output, refusal)
    assert checked.exception is None or isinstance(checked.exception, SystemExit), checked.exception
    if form in GOOD:
        key = sorted(ITEMS, key=lambda i: i["id"])
        assert sorted(loaded, key=lambda i: i["id"]) == key
        assert sorted(read_items(source).to_list(), key=lambda i: i["id"]) == key
        assert load_items(source, split="train") == [i for i in loaded if i["split"] == "train"]
    else:
        assert "error:" in checked.output
        assert source.split("/")[-1].replace("./", "") in str(refusal)
        if form == "build_folder":
            assert f"give the item file itself: {source}/items.jsonl" in str(refusal)


def test_read_errors_name_the_file_row_field_and_fix(tmp_path):
    rows = [dict(i) for i in ITEMS]
    rows[3]["polarity"] = 5
    path = tmp_path / "bad.jsonl"
    path.write_text(_jsonl(rows))
    with pytest.raises(ItemValidationError) as err:
        load_items(str(path))
    message = str(err.value)
    # Counted as an editor counts lines (the row at index 3 is line 4 of the JSONL file).
    assert message.startswith(f"{path}, line 4 (id {rows[3]['id']!r}), field 'polarity': must be +1 or -1, got 5")
    assert "\n  fix: use 1" in message and err.value.source == str(path) and err.value.row == 3
    assert str(pickle.loads(pickle.dumps(err.value))) == message  # whole across processes (accelerate, datasets.map)
    with pytest.raises(ItemValidationError, match=r"(?s)not_schema\.jsonl, field 'id': not in the item schema.*--map FIELD=COLUMN"):
        load_items(str(_make(tmp_path, "not_schema.jsonl")))


def test_a_failed_folder_save_leaves_the_old_set_whole(tmp_path, monkeypatch):
    out = tmp_path / "items"
    save_items(to_dataset(ITEMS), out, metadata={"note": "old"}, failures=[{"row": 1, "reason": "old"}])
    before = sorted(os.listdir(out))
    # a failure while the new set is being written (after part of it is on disk)
    real_save = datasets.Dataset.save_to_disk

    def save_then_crash(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_items(to_dataset(ITEMS[:20]), out, metadata={"note": "new"})
    monkeypatch.undo()
    # failures that cannot be written stop the save too
    with pytest.raises(TypeError):
        save_items(to_dataset(ITEMS[:20]), out, metadata={"note": "new"}, failures=[{"row": object()}])
    back = read_items(out)
    assert back.to_list() == ITEMS and read_metadata(back)["note"] == "old"
    assert sorted(os.listdir(out)) == before and (out / "failures.jsonl").read_text().count("old") == 1
    assert sorted(os.listdir(tmp_path)) == ["items"]  # no half-built folder left beside it
    save_items(to_dataset(ITEMS[:20]), out, metadata={"note": "new"})
    assert len(read_items(out)) == 20 and read_metadata(read_items(out))["note"] == "new"


@pytest.mark.parametrize("name", ["items.parquet", "items.jsonl", "items.csv"])
def test_a_failed_file_save_leaves_the_old_set_whole(tmp_path, name):
    path = tmp_path / name
    save_items(to_dataset(ITEMS), path, metadata={"note": "old"}, failures=[{"row": 1, "reason": "old"}])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TypeError):
        save_items(to_dataset(ITEMS[:20]), path, metadata={"note": "new"}, failures=[{"row": object()}])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_save_refuses_to_replace_a_folder_that_is_not_an_item_set(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a saved item set"):
        save_items(to_dataset(ITEMS), tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_saved_metadata_records_the_id_version(tmp_path):
    path = save_items(to_dataset(ITEMS), tmp_path / "items.jsonl", metadata={"source": "builtin"})
    meta = json.loads((tmp_path / "items.meta.json").read_text())
    assert meta["item_id_version"] == 2 and meta["source"] == "builtin"
    assert read_metadata(read_items(path))["item_id_version"] == 2
