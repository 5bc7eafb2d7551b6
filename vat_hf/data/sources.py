"""Where a run's items come from: one function, :func:`load_items`, for every source.

``source`` is ``"builtin"`` (the set shipped in the package), a local file or folder in the item
schema (JSONL/JSON/CSV/Parquet, or a ``save_to_disk`` folder), or a Hub dataset id. Sources
with other column names go through :mod:`vat_hf.data.hub` (``columns=`` mapping).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from vat_hf.data.builtin import load_builtin
from vat_hf.data.schema import validate_items

_FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _load_dataset_rows(source: str, columns: Optional[Mapping[str, str]] = None) -> List[Dict]:
    if columns:
        from vat_hf.data import hub

        return list(hub.load_mapped(source, columns))
    import datasets

    path = Path(source).expanduser()
    if path.is_dir() and any((path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(str(path))
    elif path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(f"{path}: unknown file type {path.suffix!r}; use one of {sorted(_FILE_BUILDERS)}")
        loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
    elif path.exists() or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"item source {source!r} is neither a file nor a save_to_disk folder")
    else:
        loaded = datasets.load_dataset(str(source))
    if isinstance(loaded, datasets.DatasetDict):
        loaded = datasets.concatenate_datasets(list(loaded.values()))
    return list(loaded)


def sample_scenes(items: List[Dict], max_scenes: Optional[int], seed: int = 0) -> List[Dict]:
    """Keep all items of ``max_scenes`` scenes drawn reproducibly from ``seed``."""
    if not max_scenes:
        return items
    scenes = sorted({item["scene_id"] for item in items})
    random.Random(seed).shuffle(scenes)
    keep = set(scenes[:max_scenes])
    return [item for item in items if item["scene_id"] in keep]


def load_items(
    source: str = "builtin",
    split: Optional[str] = None,
    max_scenes: Optional[int] = None,
    seed: int = 0,
    columns: Optional[Mapping[str, str]] = None,
) -> List[Dict]:
    """Validated items from ``source``, optionally one split and a reproducible scene sample."""
    if source == "builtin":
        items = load_builtin()
    else:
        items = validate_items(_load_dataset_rows(source, columns))
    if split is not None:
        items = [item for item in items if item["split"] == split]
        if not items:
            raise ValueError(f"item source {source!r} has no {split!r} items")
    return sample_scenes(items, max_scenes, seed)
