"""The built-in item set, written by the vat-hf authors and shipped in the package.

``builtin_scenes.yaml`` holds scenes; each scene has, for each of the ten basic values, one
action that expresses it and one that goes against it. :func:`load_builtin` flattens it into
items of :data:`vat_hf.data.schema.ITEM_FEATURES` (20 per scene), with ids from
:func:`vat_hf.data.fields.item_id` (``us-work-01/self-direction/pos``). Splits are set per scene in
the file (11 scenes ``train``, 22 ``test``).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Dict, List, Optional

import yaml

from vat_hf.data.fields import POLARITY_WORDS, item_id
from vat_hf.data.schema import validate_items
from vat_hf.values import BASIC_VALUES

BUILTIN_FILE = "builtin_scenes.yaml"


@lru_cache(maxsize=1)
def _builtin_items() -> tuple:
    text = resources.files("vat_hf.data").joinpath(BUILTIN_FILE).read_text(encoding="utf-8")
    scenes = yaml.safe_load(text)
    rows: List[Dict] = []
    for scene in scenes:
        for value in BASIC_VALUES:
            pair = scene["actions"][value]
            for polarity, key in POLARITY_WORDS.items():
                rows.append(
                    {
                        "id": item_id(scene["scene_id"], value, polarity),
                        "scene_id": scene["scene_id"],
                        "country": scene["country"],
                        "domain": scene["domain"],
                        "scenario": scene["scenario"],
                        "action": pair[key],
                        "value": value,
                        "micro_value": None,
                        "polarity": polarity,
                        "split": scene["split"],
                    }
                )
    return tuple(validate_items(rows))


def load_builtin(split: Optional[str] = None) -> List[Dict]:
    """Items of the built-in set, optionally only one split (``"train"`` or ``"test"``)."""
    items = [dict(item) for item in _builtin_items()]
    if split is not None:
        items = [item for item in items if item["split"] == split]
    return items
