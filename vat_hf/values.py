"""The Schwartz value taxonomy: the one place vat-hf defines values.

Ten basic values in circumplex order (Schwartz 1992; 2012), each with a one-line definition
and an angle on the circle (36 degree steps in that order, so adjacent values are compatible
and values 180 degrees apart conflict), the 56 Schwartz Value Survey (SVS) items mapped to
their basic value (the mapping used by the ValueActionLens corpus and the Value Alignment Tax
dataset), and the four higher-order groups.

Hedonism shares elements of Openness to Change and of Self-Enhancement (Schwartz 2012, p. 9).
vat-hf assigns it to **Openness to Change**, as the European Social Survey's analyses usually
do; :data:`HEDONISM_ALSO_IN` records the other group for readers who want the alternative.

Every name that enters vat-hf (from a recipe, a CLI flag, a dataset column) goes through
:func:`canonical_value`, :func:`canonical_micro_value`, :func:`canonical_group` or, where a
name may be a basic value or a survey item, :func:`resolve_value_pair`; all compare names by
:func:`name_key`, so "self direction", "Self-Direction" and "SELF_DIRECTION" are the same value
everywhere.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from vat_hf.errors import VatHfError


@dataclass(frozen=True)
class BasicValue:
    name: str
    definition: str
    angle_deg: float
    higher_order: str


# Circumplex order. Definitions follow Schwartz (2012), "An Overview of the Schwartz Theory of
# Basic Values", Online Readings in Psychology and Culture 2(1), table 1 wording, shortened.
_BASIC: Tuple[Tuple[str, str, str], ...] = (
    ("Self-Direction", "Independent thought and action: choosing, creating, exploring.", "Openness to Change"),
    ("Stimulation", "Excitement, novelty and challenge in life.", "Openness to Change"),
    ("Hedonism", "Pleasure or sensuous gratification for oneself.", "Openness to Change"),
    ("Achievement", "Personal success through demonstrating competence according to social standards.", "Self-Enhancement"),
    ("Power", "Social status and prestige, control or dominance over people and resources.", "Self-Enhancement"),
    ("Security", "Safety, harmony and stability of society, of relationships and of self.", "Conservation"),
    ("Conformity", "Restraint of actions likely to upset or harm others and violate social expectations or norms.", "Conservation"),
    ("Tradition", "Respect, commitment and acceptance of the customs and ideas of one's culture or religion.", "Conservation"),
    ("Benevolence", "Preserving and enhancing the welfare of those with whom one is in frequent personal contact.", "Self-Transcendence"),
    ("Universalism", "Understanding, appreciation, tolerance and protection of the welfare of all people and of nature.", "Self-Transcendence"),
)

BASIC_VALUES: Tuple[str, ...] = tuple(name for name, _, _ in _BASIC)
ANGLE_STEP_DEG = 360.0 / len(BASIC_VALUES)

VALUES: Dict[str, BasicValue] = {
    name: BasicValue(name=name, definition=definition, angle_deg=i * ANGLE_STEP_DEG, higher_order=group)
    for i, (name, definition, group) in enumerate(_BASIC)
}

HIGHER_ORDER_GROUPS: Tuple[str, ...] = ("Openness to Change", "Self-Enhancement", "Conservation", "Self-Transcendence")
HEDONISM_ALSO_IN = "Self-Enhancement"

# The 56 SVS items as the ValueActionLens corpus names them (see ../shared/.../SOURCE.md).
MICRO_VALUES: Dict[str, str] = {}
for _basic, _items in (
    ("Power", ("Social Power", "Authority", "Wealth", "Preserving my Public Image", "Social Recognition")),
    ("Achievement", ("Successful", "Capable", "Ambitious", "Influential", "Intelligent", "Self-Respect")),
    ("Hedonism", ("Pleasure", "Enjoying Life")),
    ("Stimulation", ("Daring", "A Varied Life", "An Exciting Life")),
    ("Self-Direction", ("Creativity", "Curious", "Freedom", "Choosing Own Goals", "Independent")),
    ("Universalism", ("Protecting the Environment", "A World of Beauty", "Broad-Minded", "Social Justice",
                      "Wisdom", "Equality", "A World at Peace", "Inner Harmony", "Unity With Nature")),
    ("Benevolence", ("Helpful", "Honest", "Forgiving", "Loyal", "Responsible", "True Friendship",
                     "A Spiritual Life", "Mature Love", "Meaning in Life")),
    ("Tradition", ("Devout", "Accepting my Portion in Life", "Humble", "Moderate", "Respect for Tradition", "Detachment")),
    ("Conformity", ("Politeness", "Honoring of Parents and Elders", "Obedient", "Self-Discipline")),
    ("Security", ("Clean", "National Security", "Social Order", "Family Security", "Reciprocation of Favors",
                  "Healthy", "Sense of Belonging")),
):
    for _item in _items:
        MICRO_VALUES[_item] = _basic
del _basic, _items, _item


class UnknownValueError(VatHfError, ValueError):
    """A value name that is not in the taxonomy; the message lists the valid names."""


def _shown(name) -> str:
    """A name as a message quotes it: numpy strings as plain ones (not ``np.str_('...')``).

    >>> import numpy as np; _shown(np.str_("Kindness"))
    "'Kindness'"
    """
    return repr(str(name)) if isinstance(name, str) else repr(name)


def name_key(name: str) -> str:
    """The form in which names are compared: case- and punctuation-insensitive.

    >>> name_key("Self-Direction") == name_key("self direction") == name_key("SELF_DIRECTION")
    True
    """
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_BASIC_BY_KEY = {name_key(v): v for v in BASIC_VALUES}
_MICRO_BY_KEY = {name_key(m): m for m in MICRO_VALUES}
_GROUP_BY_KEY = {name_key(g): g for g in HIGHER_ORDER_GROUPS}


def canonical_value(name: str) -> str:
    """Return the canonical basic-value name for ``name``.

    >>> canonical_value("self direction")
    'Self-Direction'
    """
    found = _BASIC_BY_KEY.get(name_key(name))
    if found is None:
        raise UnknownValueError(f"unknown basic value {_shown(name)}; valid names: {', '.join(BASIC_VALUES)}")
    return found


def canonical_micro_value(name: str) -> str:
    """Return the canonical SVS item name for ``name`` (one of the 56)."""
    found = _MICRO_BY_KEY.get(name_key(name))
    if found is None:
        raise UnknownValueError(f"unknown value-survey item {_shown(name)}; valid names: {', '.join(MICRO_VALUES)}")
    return found


def canonical_group(name: str) -> str:
    """Return the canonical higher-order group name for ``name``."""
    found = _GROUP_BY_KEY.get(name_key(name))
    if found is None:
        raise UnknownValueError(f"unknown higher-order group {_shown(name)}; valid names: {', '.join(HIGHER_ORDER_GROUPS)}")
    return found


VALUE_KINDS = ("auto", "basic", "micro")


def accepted_values(kind: str = "auto") -> str:
    """The names :func:`resolve_value_pair` accepts for ``kind``, in words (for error messages).

    >>> accepted_values("basic")[:38], accepted_values("micro")[:32]
    ('a basic value (Self-Direction, Stimula', 'one of the 56 value-survey items')
    """
    if kind not in VALUE_KINDS:
        raise ValueError(f"kind must be one of {VALUE_KINDS}, got {kind!r}")
    basic = f"a basic value ({', '.join(BASIC_VALUES)})"
    micro = f"one of the {len(MICRO_VALUES)} value-survey items ({', '.join(MICRO_VALUES)})"
    return {"basic": basic, "micro": micro, "auto": f"{basic} or {micro}"}[kind]


def resolve_value_pair(name: str, kind: str = "auto") -> Tuple[str, Optional[str]]:
    """``(basic value, survey item or None)`` for a basic value or a survey item name.

    ``kind``: ``"basic"`` accepts only basic values, ``"micro"`` only survey items, ``"auto"``
    either (a basic value wins when a name is both).

    >>> resolve_value_pair("honest"), resolve_value_pair("Benevolence")
    (('Benevolence', 'Honest'), ('Benevolence', None))
    """
    accepted = accepted_values(kind)
    key = name_key(name)
    if kind in ("auto", "basic") and key in _BASIC_BY_KEY:
        return _BASIC_BY_KEY[key], None
    if kind in ("auto", "micro") and key in _MICRO_BY_KEY:
        micro = _MICRO_BY_KEY[key]
        return MICRO_VALUES[micro], micro
    raise UnknownValueError(f"unknown value {_shown(name)}; give {accepted}")


def resolve_value(name: str) -> str:
    """A basic value given either as its own name or as one of its survey items.

    >>> resolve_value("Honest")
    'Benevolence'
    """
    return resolve_value_pair(name)[0]


def micro_values_of(value: str) -> List[str]:
    basic = canonical_value(value)
    return [m for m, b in MICRO_VALUES.items() if b == basic]


def higher_order_of(value: str) -> str:
    return VALUES[canonical_value(value)].higher_order


def definition(value: str) -> str:
    return VALUES[canonical_value(value)].definition


def angle(value: str) -> float:
    """Angle of the value on the circumplex, in degrees."""
    return VALUES[canonical_value(value)].angle_deg


def circumplex_cosine(value: str, target: str) -> float:
    """cos of the angle between two values: 1 for the same, -1 for opposite values."""
    return math.cos(math.radians(angle(value) - angle(target)))
