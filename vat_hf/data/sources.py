"""Where a run's items come from: one function, :func:`load_items`, for every source and caller
(``vat-hf eval``, ``vat-hf run``, training, the prompt intervention's demonstrations).

``source`` is ``"builtin"`` (the set shipped in the package, :mod:`vat_hf.data.builtin`), or any
source :mod:`vat_hf.data.storage` reads (a file, a ``save_to_disk`` folder, a folder of data
files, a URL, a Hub id), in the item schema or, with ``columns=``, through a column mapping
(:mod:`vat_hf.data.mapping`). ``vat-hf data check`` reads through the same storage module, so a
source it accepts is a source every run accepts.
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Mapping, Optional, Union

from vat_hf.data.builtin import load_builtin
from vat_hf.data.fields import TrainSplitError
from vat_hf.data.mapping import load_mapped
from vat_hf.data.storage import read_items


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
    columns: Optional[Union[Mapping[str, Any], str]] = None,
) -> List[Dict]:
    """Validated items from ``source``, optionally one split and a reproducible scene sample.

    ``columns``: a column mapping (a ``{field: column}`` dict, a full mapping dict or a YAML path)
    for a source with other column names. A source without items of ``split`` is an error;
    :class:`~vat_hf.data.fields.TrainSplitError` for ``split="train"``, since interventions need
    train scenes.
    """
    if source == "builtin":
        items = load_builtin()
    elif columns:
        items = load_mapped(source, columns).to_list()
    else:
        items = read_items(source).to_list()
    if split is not None:
        items = [item for item in items if item["split"] == split]
        if not items:
            error = TrainSplitError if split == "train" else ValueError
            raise error(f"item source {source!r} has no {split!r} items")
    return sample_scenes(items, max_scenes, seed)
