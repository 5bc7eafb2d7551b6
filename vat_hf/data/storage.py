"""Reading and writing item sets: the one place vat-hf turns a path, URL or Hub id into a table,
and an item set into files. Every entry point reads through here (``vat_hf.data.load_items``, so
``vat-hf eval``, ``vat-hf run`` and training; ``vat-hf data check``/``push``; the column-mapped
loader; the ValueActionLens importer), so they all accept the same sources.

Sources (:func:`read_table`):

* a file: ``.jsonl``/``.json`` (JSON lines or a JSON array), ``.csv``, ``.parquet``/``.pq``, each
  optionally compressed (``.gz``, ``.bz2``, ``.xz``, ``.zst``, ``.zip``; a bare ``.zip`` holds a
  CSV, as the released ValueActionLens corpus does);
* a ``save_to_disk`` folder (a ``Dataset`` or a ``DatasetDict``);
* a folder of data files, for example one laid out for the Hub (``README.md`` + ``data/``);
* a URL of a file (``https://``, ``hf://datasets/<repo>/<file>``, any fsspec protocol);
* a Hub dataset id (``datasets.load_dataset``: config, split and revision are passed through).

:func:`read_items` checks that a table is in the item schema and validates it
(:func:`vat_hf.data.schema.to_dataset`); errors name the source. Tables with other column names
go through :mod:`vat_hf.data.mapping` instead.

Writing (:func:`save_items`), by the output's suffix: ``.jsonl``/``.json`` (JSON lines),
``.parquet``, ``.csv``, or else a ``save_to_disk`` folder; every write is atomic (a file is
written beside and renamed, a folder built beside and swapped in; the old set is never deleted
first, so a failed save leaves it whole).

Metadata (how the set was made: source, generator, prompts, seed, :data:`ITEM_ID_VERSION` ...)
travels in ``Dataset.info.description`` as JSON and in a sidecar: ``<stem>.meta.json`` beside a
file, ``vat_hf_metadata.json`` inside a folder; unrecovered rows go to ``<stem>.failures.jsonl``
or ``failures.jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import datasets
from datasets.data_files import EmptyDatasetError

from vat_hf import __version__
from vat_hf.data.fields import ITEM_ID_VERSION, SPLITS
from vat_hf.data.schema import FIELDS, ItemValidationError, to_dataset
from vat_hf.errors import VatHfError
from vat_hf.io import atomic_write, atomic_write_dir, write_json, write_jsonl

PathLike = Union[str, Path]

METADATA_FILE = "vat_hf_metadata.json"
FAILURES_FILE = "failures.jsonl"
ITEM_SET_FORMAT = 1  # the layout of the metadata record itself
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
DISK_DATASET_FILES = ("dataset_info.json", "dataset_dict.json", "state.json")
ACCEPTED_SOURCES = (f"a {'/'.join(sorted(FILE_BUILDERS))} file (optionally {'/'.join(COMPRESSIONS)}), "
                    "a save_to_disk folder, a folder of data files, a URL of a file, or a Hub dataset id")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class ItemSourceError(VatHfError, ValueError):
    """An item file that cannot be read as a table at all (empty, not UTF-8, not the format its
    name says); names the file and, where there is one, the line."""


class ItemSourceNotFound(VatHfError, FileNotFoundError):
    """An item source that is not there: a path that does not exist, a folder with no data files."""


def file_problem(path: Path) -> Optional[ItemSourceError]:
    """What makes a local file unreadable as a table, found by looking at its bytes: empty, or
    not UTF-8 (with the line and column of the first bad byte); None when neither.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "x.jsonl"; _ = p.write_bytes(b'{"a": 1}\\n{"id": "caf\\xe9"}\\n')
    >>> print(str(file_problem(p)).replace(str(p), "x.jsonl"))
    x.jsonl:2:12: not UTF-8 text (byte 0xe9: invalid continuation byte)
      fix: save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)
    """
    if not path.is_file():
        return None
    if path.stat().st_size == 0:
        return ItemSourceError(f"{path} is empty: no items", fix="give a file with one item per row (or line)")
    if path.suffix.lower() in COMPRESSIONS or path.suffix.lower() in (".parquet", ".pq"):
        return None  # binary formats: their readers' own errors name the problem
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        return ItemSourceError(f"{path}:{line}:{err.start - line_start + 1}: not UTF-8 text "
                               f"(byte 0x{data[err.start]:02x}: {err.reason})",
                               fix="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    if not data.strip():
        return ItemSourceError(f"{path} holds only blank lines: no items", fix="give a file with one item per row (or line)")
    return None


def _unreadable(path: Path, err: BaseException) -> ItemSourceError:
    """The error of a file a reader failed on: what its bytes show, else the reader's message
    with the file's name."""
    found = file_problem(path)
    if found is not None:
        return found
    first = (str(err) or type(err).__name__).splitlines()[0]
    return ItemSourceError(f"{path}: cannot be read as {file_builder(path.name)} ({type(err).__name__}: {first})",
                           fix=f"check the file's format against its name; accepted: {ACCEPTED_SOURCES}")


def file_builder(name: str) -> str:
    """The ``datasets`` builder that reads a file, from its name's suffixes.

    >>> file_builder("items.jsonl.gz"), file_builder("corpus.zip"), file_builder("x.pq")
    ('json', 'csv', 'parquet')
    """
    suffixes = [s.lower() for s in Path(name.split("?", 1)[0]).suffixes]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSIONS
    if compressed:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in FILE_BUILDERS:
        return FILE_BUILDERS[suffixes[-1]]
    if compressed and not suffixes and name.lower().endswith(".zip"):
        return "csv"  # the released corpora ship a zipped CSV
    raise ValueError(f"{name}: unknown file type {''.join(suffixes) or '(no suffix)'!r}; use {ACCEPTED_SOURCES}")


def is_disk_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in DISK_DATASET_FILES)


def _saved_item_files(folder: Path) -> List[Path]:
    """The item set files :func:`save_items` wrote into ``folder`` (those with a metadata sidecar)."""
    return [p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix and not p.name.endswith(".meta.json") and metadata_path(p).is_file()]


def read_table(source: PathLike, config: Optional[str] = None, split: Optional[str] = None,
               revision: Optional[str] = None, **builder_kwargs: Any) -> datasets.Dataset:
    """Any table as one :class:`datasets.Dataset`, columns untouched (see the module docstring).

    ``split`` picks one of the source's splits; without it all splits are concatenated.
    ``builder_kwargs`` go to the file builder (e.g. ``keep_default_na=False`` for a CSV).
    """
    text = str(source)
    path = Path(text).expanduser()
    loaded: Any
    if "://" in text:  # a URL of a file: https://, hf://datasets/..., s3:// ...
        loaded = datasets.load_dataset(file_builder(text), data_files=text, split=split or "train", **builder_kwargs)
    elif is_disk_dataset(path):
        loaded = datasets.load_from_disk(str(path))
    elif path.is_file():
        builder = file_builder(path.name)
        # Looked at first: the JSON builder's answer to an empty file is a bare StopIteration, and
        # pyarrow keeps bytes that are not UTF-8 until a row is read, far from the file.
        found = file_problem(path)
        if found is not None:
            raise found
        try:
            loaded = datasets.load_dataset(builder, data_files=str(path), split="train", **builder_kwargs)
        except (StopIteration, UnicodeDecodeError, ValueError, TypeError, KeyError) as err:
            raise _unreadable(path, err) from err
        except Exception as err:  # pyarrow's and the builders' own errors (ArrowInvalid, DatasetGenerationError, ...)
            if type(err).__module__.split(".")[0] not in ("pyarrow", "datasets"):
                raise
            raise _unreadable(path, err) from err
    elif path.is_dir():
        saved = _saved_item_files(path)
        if saved and not (path / "README.md").exists():  # e.g. a `vat-hf data build` folder
            raise ValueError(f"{path} is a folder holding saved item set file(s) and their sidecars, not a dataset; "
                             f"give the item file itself: {', '.join(str(p) for p in saved)}")
        try:
            loaded = datasets.load_dataset(str(path), split=split, **builder_kwargs)
        except EmptyDatasetError as err:  # an empty folder, or none of its files is data
            raise ItemSourceNotFound(f"item source {text!r} is a folder without data files ({err})",
                                     fix=f"give {ACCEPTED_SOURCES}") from None
    elif text.startswith((".", "/", "~")) or text.count("/") > 1 or path.suffix.lower() in (*FILE_BUILDERS, *COMPRESSIONS):
        raise ItemSourceNotFound(f"item source {text!r} does not exist", fix=f"give {ACCEPTED_SOURCES}")
    else:
        loaded = datasets.load_dataset(text, name=config, split=split, revision=revision, **builder_kwargs)
    if isinstance(loaded, datasets.DatasetDict):
        if split is not None:
            if split not in loaded:
                raise ValueError(f"{text!r} has no split {split!r}; it has {sorted(loaded)}")
            loaded = loaded[split]
        else:
            loaded = datasets.concatenate_datasets([loaded[k] for k in loaded])
    return loaded


def read_items(source: PathLike, validate: bool = True, **read_kwargs: Any) -> datasets.Dataset:
    """An item set (a :class:`datasets.Dataset` with ``ITEM_FEATURES``) from a source in the item schema.

    A table without the schema's columns is refused with the columns it has and the fix (a
    column mapping, :mod:`vat_hf.data.mapping`). ``validate=False`` returns the rows as they are
    (for :func:`vat_hf.data.quality.check_items`, which reports problems such as split leakage
    rather than stopping at the first). Metadata comes from the table or its sidecar.
    """
    raw = read_table(source, **read_kwargs)
    missing = [f for f in FIELDS if f not in raw.column_names and f != "micro_value"]
    if missing:
        raise ItemValidationError(None, missing[0], f"not in the item schema: missing column(s) {missing}; it has "
                                  f"{raw.column_names}", "load it with a column mapping (--mapping FILE.yaml or "
                                  "--map FIELD=COLUMN; columns= in Python and recipes)", source=str(source))
    if not validate:
        return raw
    try:
        ds = to_dataset(raw)
    except ItemValidationError as err:
        err.source = str(source)
        raise
    except UnicodeDecodeError as err:  # pyarrow read the bytes; decoding a row to Python fails
        raise _unreadable(Path(str(source)).expanduser(), err) from err
    meta = read_metadata(raw) or _read_sidecar(Path(str(source)))
    ds.info.description = json.dumps(meta, ensure_ascii=False) if meta else raw.info.description
    return ds


# ---------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------


def items_metadata(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """Metadata of an item set as stored in ``Dataset.info.description`` (JSON) and the sidecar:
    the format, the vat-hf version and the id scheme it was made under, then ``meta`` (whose
    keys win: a set keeps the record of how it was made).

    A set saved by vat-hf before ids were versioned has ``vat_hf_item_set`` but no
    ``item_id_version``: its ids are version 1.

    >>> items_metadata({"seed": 3})["item_id_version"], items_metadata({"vat_hf_item_set": 1})["item_id_version"]
    (2, 1)
    """
    id_version = 1 if "vat_hf_item_set" in meta else ITEM_ID_VERSION
    return {"vat_hf_item_set": ITEM_SET_FORMAT, "vat_hf_version": __version__, "item_id_version": id_version, **dict(meta)}


def read_metadata(ds: datasets.Dataset) -> Dict[str, Any]:
    """The metadata an item set carries in ``info.description`` ({} when there is none)."""
    try:
        meta = json.loads(ds.info.description or "{}")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def sidecar_path(path: PathLike, name: str) -> Path:
    """Where a saved item set's ``name`` sidecar lives: ``<stem>.<name>`` beside a file, ``<name>``
    inside a folder.

    >>> str(sidecar_path("out/items.jsonl", "failures.jsonl")), str(sidecar_path("out/items", "failures.jsonl"))
    ('out/items.failures.jsonl', 'out/items/failures.jsonl')
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.{name}") if path.suffix else path / name


def metadata_path(path: PathLike) -> Path:
    return sidecar_path(path, "meta.json") if Path(path).suffix else Path(path) / METADATA_FILE


def failures_path(path: PathLike) -> Path:
    return sidecar_path(path, FAILURES_FILE)


def _read_sidecar(path: Path) -> Dict[str, Any]:
    sidecar = metadata_path(path) if (path.is_file() or path.is_dir()) else None
    if sidecar is None or not sidecar.is_file():
        return {}
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def split_parts(ds: datasets.Dataset) -> Dict[str, datasets.Dataset]:
    """``{split: the rows of that split}``, in row order, for the splits that have rows."""
    column = ds["split"]
    parts = {s: [i for i, x in enumerate(column) if x == s] for s in SPLITS}
    return {s: ds.select(rows) for s, rows in parts.items() if rows}


def save_items(ds: Union[datasets.Dataset, Sequence[Mapping]], path: PathLike,
               metadata: Optional[Mapping[str, Any]] = None,
               failures: Optional[Sequence[Mapping[str, Any]]] = None) -> Path:
    """Write an item set atomically (see the module docstring) and return its path.

    ``metadata`` is merged over the set's own; ``failures`` (rows a source could not turn into
    items) go to the failures sidecar. A folder that exists and is not a saved item set is
    refused rather than replaced.
    """
    if not isinstance(ds, datasets.Dataset):
        ds = to_dataset(ds)
    path = Path(path)
    meta = items_metadata({**read_metadata(ds), **(metadata or {})})
    ds.info.description = json.dumps(meta, ensure_ascii=False)
    suffix = path.suffix.lower()
    if not suffix:
        if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not is_disk_dataset(path))):
            raise FileExistsError(f"{path} exists and is not a saved item set; choose an empty or new folder")

        def build(tmp: Path) -> None:
            ds.save_to_disk(str(tmp))
            write_json(tmp / METADATA_FILE, meta)
            if failures is not None:
                write_jsonl(tmp / FAILURES_FILE, failures)

        return atomic_write_dir(path, build)
    writers = {".jsonl": lambda: write_jsonl(path, ds), ".json": lambda: write_jsonl(path, ds),
               ".parquet": lambda: atomic_write(path, ds.to_parquet),
               ".csv": lambda: atomic_write(path, lambda tmp: ds.to_csv(tmp, index=False))}
    if suffix not in writers:
        raise ValueError(f"{path}: unknown output type {suffix!r}; use .jsonl, .json, .parquet, .csv or a folder")
    # Sidecars first, the items last: metadata or failures that cannot be written stop the save
    # before the old items are touched.
    if failures is not None:
        write_jsonl(failures_path(path), failures)
    write_json(metadata_path(path), meta)
    writers[suffix]()
    return path
