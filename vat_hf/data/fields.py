"""Field rules of scenario–action items: how each field is spelled, made and checked, in one place.

Every source of items (the built-in set, the ValueActionLens importer, the column-mapped loader,
the generator) makes its fields with these rules, so that one item looks the same whichever
source it came from:

* **splits**: :data:`SPLITS`, :data:`DEFAULT_TRAIN_FRACTION`, :func:`assign_splits` (per scene,
  seeded) and :func:`fill_splits`, the one place rows without a split get one; the train-split
  guard :func:`train_items_for` / :class:`TrainSplitError`, which keeps evaluation scenes out of
  every intervention.
* **polarity**: :data:`POLARITIES` and the accepted spellings (:func:`polarity_of`).
* **ids**: :func:`slug`, :func:`scene_id`, :func:`item_id` and :func:`fill_ids`, versioned by
  :data:`ITEM_ID_VERSION`.
* **scenario templates**: :data:`SCENARIO_TEMPLATE` and :func:`render_scenario`, for sources whose
  scenes are a country x domain with no scenario sentence.

Value names are resolved only by :mod:`vat_hf.values` (``resolve_value_pair``, ``name_key``).
This module imports nothing else from vat-hf, so every other data module may import it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Dict, Iterable, List, Mapping, MutableMapping, Optional, Sequence

from vat_hf.errors import VatHfError
from vat_hf.values import canonical_value

# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------

SPLITS = ("train", "test")
DEFAULT_TRAIN_FRACTION = 1 / 3
"""Fraction of scenes assigned to ``train`` when a source has no splits: that of the built-in set
(11 of 33 scenes)."""


def assign_splits(scene_ids: Iterable[str], seed: int = 0, train_fraction: float = DEFAULT_TRAIN_FRACTION) -> Dict[str, str]:
    """``{scene_id: "train" | "test"}``: ``round(train_fraction * n)`` scenes go to ``train``.

    Scenes are ordered by ``sha256(f"{seed}:{scene_id}")`` and the first ones are ``train``, so the
    assignment depends only on the seed and the set of scene ids (not on row order), and every
    scene sits in exactly one split.

    >>> assign_splits(["a", "b", "c"], seed=0)
    {'a': 'train', 'b': 'test', 'c': 'test'}
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be within [0, 1], got {train_fraction}")
    scenes = sorted(set(scene_ids))
    order = sorted(scenes, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n_train = int(round(train_fraction * len(scenes)))
    train = set(order[:n_train])
    return {s: ("train" if s in train else "test") for s in scenes}


class SplitConflictError(VatHfError, ValueError):
    """A scene with a split on some rows and none on others."""

    def __init__(self, scene: str, row: int):
        self.scene, self.row = scene, row
        super().__init__(f"scene {scene!r} has a split on some rows and none on others (first without one: row {row + 1})",
                         fix="give every row of a scene the same split, or leave the split empty on all of them")

    def __reduce__(self):  # picklable across processes despite the custom signature
        return type(self), (self.scene, self.row)


def fill_splits(rows: Sequence[MutableMapping[str, Any]], seed: int = 0,
                train_fraction: float = DEFAULT_TRAIN_FRACTION) -> None:
    """Give every row without a ``split`` its scene's split, in place.

    Scenes that have a split keep it; scenes that have none are assigned by :func:`assign_splits`
    (``seed``, ``train_fraction``). A scene with a split on some rows and none on others raises
    :class:`SplitConflictError`.

    >>> rows = [{"scene_id": "a", "split": ""}, {"scene_id": "b", "split": "test"}, {"scene_id": "c", "split": None}]
    >>> fill_splits(rows, train_fraction=0.5); [r["split"] for r in rows]
    ['train', 'test', 'test']
    """
    given = {r["scene_id"] for r in rows if r.get("split")}
    unassigned = [i for i, r in enumerate(rows) if not r.get("split")]
    for i in unassigned:
        if rows[i]["scene_id"] in given:
            raise SplitConflictError(rows[i]["scene_id"], i)
    splits = assign_splits({rows[i]["scene_id"] for i in unassigned}, seed=seed, train_fraction=train_fraction)
    for i in unassigned:
        rows[i]["split"] = splits[rows[i]["scene_id"]]


class TrainSplitError(VatHfError, ValueError):
    """Intervention material asked for from items that are not all ``train`` items, or from a
    source that has none."""


def train_items_for(items: Sequence[Mapping], target_value: str) -> List[Mapping]:
    """The ``train`` items of ``target_value``; refuses ``test`` items so no evaluation scene
    leaks into an intervention (prompt demonstrations, SFT or DPO data)."""
    leaked = [item["id"] for item in items if item["split"] != "train"]
    if leaked:
        raise TrainSplitError(
            f"{len(leaked)} items given as intervention material are not in the 'train' split "
            f"(first: {leaked[0]!r}); pass only train items (vat_hf.data.load_items(source, split='train'))"
        )
    target = canonical_value(target_value)
    chosen = [item for item in items if item["value"] == target]
    if not chosen:
        raise TrainSplitError(f"no 'train' items of {target!r}; the intervention needs some")
    return chosen


# ---------------------------------------------------------------------------------------------
# Polarity
# ---------------------------------------------------------------------------------------------

POLARITIES = (1, -1)
POLARITY_WORDS = {1: "express", -1: "against"}
"""How the built-in scenes file and the generator's stage-2 answers name the two actions."""
POLARITY_SPELLINGS: Dict[str, int] = {
    "1": 1, "+1": 1, "1.0": 1, "positive": 1, "pos": 1, "express": 1, "expresses": 1, "support": 1, "supports": 1,
    "-1": -1, "-1.0": -1, "negative": -1, "neg": -1, "suppress": -1, "suppresses": -1, "violate": -1, "violates": -1,
    "against": -1,
}
POLARITY_ACCEPTED = "+1/1 or -1, positive/negative, express/suppress, support/violate (also pos/neg, against)"


def polarity_of(value: Any, extra: Optional[Mapping[str, int]] = None) -> int:
    """+1 or -1 from any accepted spelling (``extra`` adds spellings); ``ValueError`` naming the
    accepted ones otherwise.

    >>> polarity_of("Violate"), polarity_of(1), polarity_of("+1"), polarity_of("agree", {"Agree": 1})
    (-1, 1, 1, 1)
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a polarity; accepted: {POLARITY_ACCEPTED}")
    if isinstance(value, (int, float)) and value in POLARITIES:
        return int(value)
    key = str(value).strip().lower()
    for spelling, polarity in (extra or {}).items():
        if str(spelling).strip().lower() == key:
            return polarity_of(polarity)
    if key in POLARITY_SPELLINGS:
        return POLARITY_SPELLINGS[key]
    more = f", or {sorted(extra)}" if extra else ""
    raise ValueError(f"{value!r} is not a polarity; accepted: {POLARITY_ACCEPTED}{more}")


# ---------------------------------------------------------------------------------------------
# Ids
# ---------------------------------------------------------------------------------------------

ITEM_ID_VERSION = 2
"""Version of the id scheme of :func:`item_id`, recorded in every saved item set's metadata.

* **1** (before the data-layer redesign, issue 13): the built-in set spelled the value part with
  ``vat_hf.values.name_key`` (``us-work-01/selfdirection/pos``), every other source with
  :func:`slug` (``.../self-direction/pos``).
* **2**: one builder, :func:`item_id`, with :func:`slug` for every source. Only the built-in
  set's ids changed, and only the 66 Self-Direction items (``selfdirection`` ->
  ``self-direction``): every other basic value is one word, for which ``name_key`` and ``slug``
  agree. Sorting by id gives the same order under both versions. Repeats of an id within one
  source (a corpus with two rows for one cell) are numbered ``/2``, ``/3`` ... by :func:`fill_ids`
  (version 1 wrote ``/r<row>`` in the ValueActionLens importer; the released corpus has none).

What version 2 invalidates, and what it does not:

* The judgment cache (:mod:`vat_hf.evaluation.cache`) keys on the model, adapter, prompt,
  scoring and ``item_hash`` = the scenario and action text, never the id: every cached judgment
  stays valid and is reused, and its record takes the current item's id.
* Prompt fingerprints (``JudgePrompt.fingerprint``) hold the demonstrations' text, not ids; the
  demonstrations drawn for a seed are the same items.
* ``vat-hf run``'s finished-stage reuse (``pipeline._reusable``) compares the ids of
  ``judgments/<stage>.jsonl`` with the items': an output directory made on the built-in set
  before the change is judged again (from the judgment cache: the model is loaded, nothing is
  recomputed) and the file is rewritten with version-2 ids.
* Pairing before/after judgments by id (``vat_hf.metrics.paired.pair_judgments``, ``vat-hf
  score``; ``vat_hf.train.anchors``): a judgments file written on the built-in set before the
  change pairs with one written after on every item but the 66 Self-Direction ones, which are
  left out. Re-run (or re-score) both sides with the same version.
* The data fingerprint (:func:`vat_hf.data.items_fingerprint`) covers the ids, so results on the
  built-in set record a new fingerprint for the same item content.
* Item sets saved to files keep the ids they were saved with (ids in a file are read, never
  rebuilt). Sets saved from now on record ``item_id_version`` in their metadata; a set saved
  before carries none and is recorded as version 1 when saved again
  (:func:`vat_hf.data.storage.items_metadata`). Only a saved copy of the built-in set holds ids
  that differ between the versions.
"""
POLARITY_ID_PARTS = {1: "pos", -1: "neg"}


def slug(text: str) -> str:
    """Lower-case ASCII slug, the one spelling of names inside ids.

    >>> slug("Family & Changing Gender Roles"), slug("Self-Direction")
    ('family-changing-gender-roles', 'self-direction')
    """
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def scene_id(prefix: str, country: str, domain: str, *rest: str) -> str:
    """``<prefix>/<country slug>/<domain slug>[/<rest>...]``: the id of a scene made by a source.

    >>> scene_id("vl", "United States", "Work Orientation")
    'vl/united-states/work-orientation'
    """
    return "/".join([prefix, slug(country), slug(domain), *rest])


def item_id(scene: str, value: str, polarity: int, micro_value: Optional[str] = None) -> str:
    """``<scene>/<slug of the survey item, else of the value>/<pos|neg>`` (:data:`ITEM_ID_VERSION` 2).

    >>> item_id("us-work-01", "Self-Direction", 1), item_id("vl/india/politics", "Benevolence", -1, "Honest")
    ('us-work-01/self-direction/pos', 'vl/india/politics/honest/neg')
    """
    return f"{scene}/{slug(micro_value or value)}/{POLARITY_ID_PARTS[1 if polarity > 0 else -1]}"


def fill_ids(rows: Sequence[MutableMapping[str, Any]]) -> None:
    """Give every row without an ``id`` its :func:`item_id`, in place; a repeat of a made id
    within ``rows`` gets ``/2``, ``/3`` ... (rows need ``scene_id``, ``value``, ``micro_value``
    and ``polarity``).

    >>> rows = [{"id": "", "scene_id": "s", "value": "Power", "micro_value": None, "polarity": 1} for _ in range(2)]
    >>> fill_ids(rows); [r["id"] for r in rows]
    ['s/power/pos', 's/power/pos/2']
    """
    counts: Dict[str, int] = {}
    for row in rows:
        if row.get("id"):
            continue
        base = item_id(row["scene_id"], row["value"], row["polarity"], row.get("micro_value"))
        counts[base] = counts.get(base, 0) + 1
        row["id"] = base if counts[base] == 1 else f"{base}/{counts[base]}"


# ---------------------------------------------------------------------------------------------
# Scenario templates
# ---------------------------------------------------------------------------------------------

SCENARIO_TEMPLATE = "I live in {the_country}, and I am facing a situation related to {domain_lower}."
"""The one template that turns a scene given only as country x domain into a scenario sentence
(the ValueActionLens corpus has no scenario text; the column-mapped loader's ``scenario_template``
defaults to nothing and may use the same variables).

``{the_country}`` is the country with a leading "the" for the names in :data:`COUNTRIES_WITH_THE`
("the United States"); ``{domain_lower}`` is the domain in lower case ("family & changing gender
roles"). ``{country}`` and ``{domain}`` (verbatim) are available too. Actions are first-person
("I ..."), so the scenario is too.
"""
COUNTRIES_WITH_THE = frozenset({
    "United States", "United Kingdom", "Philippines", "Netherlands", "United Arab Emirates", "Czech Republic",
    "Dominican Republic", "Central African Republic", "Democratic Republic of the Congo", "Bahamas", "Gambia",
    "Maldives", "Solomon Islands", "Marshall Islands", "Comoros", "Seychelles",
})


def template_vars(country: str, domain: str) -> Dict[str, str]:
    """The variables a scenario template may use."""
    return {"country": country, "domain": domain, "domain_lower": domain.lower(),
            "the_country": f"the {country}" if country in COUNTRIES_WITH_THE else country}


def render_scenario(country: str, domain: str, template: str = SCENARIO_TEMPLATE) -> str:
    """The scenario sentence of a country x domain scene; a clear error for an unknown variable.

    >>> render_scenario("United States", "Family & Changing Gender Roles")
    'I live in the United States, and I am facing a situation related to family & changing gender roles.'
    """
    try:
        return template.format(**template_vars(country, domain))
    except (KeyError, IndexError) as err:
        raise ValueError(f"scenario template {template!r} uses {err}, which is not a template variable; "
                         f"use {', '.join('{' + k + '}' for k in template_vars('', ''))}") from None
