"""Importer for the ValueActionLens scenario–action corpus, and the forgiving parser of model output.

The corpus (Shen, Clark, Mitra, "Mind the Value-Action Gap", EMNLP 2025; public repository
``huashen218/value_action_gap``, file ``outputs/data_release/value_action_gap_full_data_generation.zip``)
has 14,784 rows = 12 countries x 11 topics x 56 value-survey items x 2 polarities, each with one
GPT-4o generated action. vat-hf reads it from a path (a ``.csv`` or the released ``.zip``) or from a
URL; it never copies it into the project.

Mapping of one corpus row to the item schema (:data:`vat_hf.data.schema.ITEM_FEATURES`):

==============  =========================================================================
item field      from the corpus
==============  =========================================================================
``scene_id``    ``vl/<country>/<topic>`` (slugs): one scene = one country x topic, 132 scenes
``country``     ``country``
``domain``      ``topic``
``scenario``    :data:`SCENARIO_TEMPLATE` filled with country and topic (the corpus has no
                scenario sentence)
``action``      the ``Human Action`` field recovered from ``generation_prompt``
``micro_value`` ``value`` (one of the 56 survey items, canonical name)
``value``       the survey item's basic value (:data:`vat_hf.values.MICRO_VALUES`)
``polarity``    ``positive`` -> +1, ``negative`` -> -1
``split``       per scene, from ``seed`` and ``train_fraction`` (:func:`vat_hf.data.hub.assign_splits`)
``id``          ``<scene_id>/<survey item slug>/<pos|neg>``
==============  =========================================================================

``generation_prompt`` holds the model's raw answer, and it is messy: JSON, Python dict literals
with single quotes (some with unescaped apostrophes), Markdown code fences, chatter before the
object, truncated answers, and refusals. :func:`extract_field` recovers the ``Human Action`` from
all of them except refusals (answers that contain no action at all). Every row that cannot be
recovered is reported by :func:`import_value_action_lens` with its index and reason; none is
dropped silently.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from vat_hf.values import MICRO_VALUES, UnknownValueError, canonical_micro_value

logger = logging.getLogger(__name__)

LENS_FILE = "value_action_gap_full_data_generation.csv"
LENS_RAW_URL = (
    "https://raw.githubusercontent.com/huashen218/value_action_gap/main/"
    "outputs/data_release/value_action_gap_full_data_generation.zip"
)
"""The released archive in the public repository (a zip holding the CSV). Pass it, or any other
URL or path of the CSV or the zip, to :func:`import_value_action_lens`."""
LENS_ROWS = 14_784
LENS_CITATION = """@inproceedings{shen2025valueaction,
  title     = {Mind the Value-Action Gap: Do LLMs Act in Alignment with Their Values?},
  author    = {Shen, Hua and Clark, Nicholas and Mitra, Tanushree},
  booktitle = {Proceedings of EMNLP 2025},
  year      = {2025}
}"""
LENS_COLUMNS = ("country", "topic", "value", "polarity", "generation_prompt")
ACTION_KEY = "Human Action"

SCENARIO_TEMPLATE = "I live in {the_country}, and I am facing a situation related to {domain_lower}."
"""The one template that turns a corpus scene (country x topic) into a scenario sentence.

``{the_country}`` is the country with a leading "the" for the names in :data:`COUNTRIES_WITH_THE`
("the United States"); ``{domain_lower}`` is the corpus topic in lower case ("family & changing
gender roles"). ``{country}`` and ``{domain}`` (verbatim) are available too. Actions in the corpus
are first-person ("I ..."), so the scenario is too. The column-mapped loader
(:mod:`vat_hf.data.hub`, ``scenario_template``) fills templates with the same variables.
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


def lens_scenario(country: str, topic: str, template: str = SCENARIO_TEMPLATE) -> str:
    """The scenario sentence of a corpus scene.

    >>> lens_scenario("United States", "Family & Changing Gender Roles")
    'I live in the United States, and I am facing a situation related to family & changing gender roles.'
    """
    return template.format(**template_vars(country, topic))


def slug(text: str) -> str:
    """Lower-case ASCII slug for ids.

    >>> slug("Family & Changing Gender Roles")
    'family-changing-gender-roles'
    """
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


# ---------------------------------------------------------------------------------------------
# Forgiving parser of model output (shared with vat_hf.data.generate)
# ---------------------------------------------------------------------------------------------

class ParseError(ValueError):
    """A model answer from which no usable structure could be recovered; the message says why."""


_FENCE = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry|apologies|i apologi[sz]e|unfortunately|i can(?:no|')t|i cannot|i won'?t|"
    r"as an ai)", re.I)
_SMART = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"})
MAX_PARSE_CHARS = 200_000


def _candidates(text: str) -> List[str]:
    """The text itself, then the insides of any Markdown code fences."""
    out = [text]
    out.extend(m.group(1) for m in _FENCE.finditer(text) if m.group(1).strip())
    return out


def _load_literal(chunk: str) -> Any:
    """JSON first, then JSON with trailing commas removed, then a Python literal."""
    try:
        return json.loads(chunk)
    except ValueError:
        pass
    fixed = _TRAILING_COMMA.sub(r"\1", chunk)
    if fixed != chunk:
        try:
            return json.loads(fixed)
        except ValueError:
            pass
    try:
        return ast.literal_eval(chunk)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise ParseError("not JSON or a Python literal") from None


def parse_structured(text: str, kind: Optional[type] = None, max_tries: int = 8) -> Any:
    """The first JSON object/array (or Python literal) inside a model answer.

    Tolerates Markdown code fences, chatter before and after the object, single quotes, trailing
    commas and curly quotes. ``kind`` (``dict`` or ``list``) restricts what is accepted.
    Raises :class:`ParseError` with the reason when nothing parses.

    >>> parse_structured('Sure! Here it is:\\n```json\\n{"a": [1, 2,],}\\n```')
    {'a': [1, 2]}
    >>> parse_structured("{'Human Action': 'I vote.'}")
    {'Human Action': 'I vote.'}
    """
    if not isinstance(text, str) or not text.strip():
        raise ParseError("empty answer")
    text = text.strip()[:MAX_PARSE_CHARS]
    openers = {dict: "{", list: "["}.get(kind, "{[") if kind else "{["
    for chunk in _candidates(text):
        variants = [chunk]
        if any(q in chunk for q in "\u201c\u201d\u2018\u2019"):
            variants.append(chunk.translate(_SMART))
        for variant in variants:
            # the outermost structure first: whichever opener comes first in the text
            for opener in sorted(openers, key=lambda o: (variant.find(o) < 0, variant.find(o))):
                closer = "}" if opener == "{" else "]"
                start = variant.find(opener)
                if start < 0:
                    continue
                end = len(variant)
                for _ in range(max_tries):
                    end = variant.rfind(closer, start, end)
                    if end < 0:
                        break
                    try:
                        obj = _load_literal(variant[start:end + 1])
                    except ParseError:
                        continue
                    if kind is None or isinstance(obj, kind):
                        return obj
    if _REFUSAL.match(text):
        raise ParseError(f"the model refused ({_excerpt(text)})")
    raise ParseError(f"no JSON object or Python literal found ({_excerpt(text)})")


def _excerpt(text: str, n: int = 80) -> str:
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= n else flat[: n - 3] + "...")


def _norm_key(key: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


_QUOTES = "\"'\u201c\u201d\u2018\u2019`"
_CLOSING = {'"': '"\u201d', "'": "'\u2019", "\u201c": '"\u201d', "\u2018": "'\u2019", "`": "`"}
# After the closing quote of a value: a comma followed by the end, a newline or the next key;
# or the end of the object; or the end of the line.
_VALUE_END = re.compile(
    r"\s*(?:,\s*(?:\Z|\n|[\"'\u201c\u2018`]?[A-Za-z][A-Za-z _-]{0,40}[\"'\u201d\u2019`]?\s*:)|[}\]]|\n|\Z)")


def _key_pattern(key: str) -> re.Pattern:
    words = r"[\s_-]*".join(re.escape(w) for w in key.split())
    return re.compile(r"[\"'\u201c\u2018`*]*\b" + words + r"\b[\"'\u201d\u2019`*]*\s*[:=]\s*", re.I)


def _scan_field(text: str, key: str) -> Optional[str]:
    """Regex recovery of ``key``'s string value from text that is not valid JSON or Python:
    unescaped apostrophes in single-quoted strings, truncated answers, broken brackets."""
    match = _key_pattern(key).search(text)
    if match is None:
        return None
    rest = text[match.end():]
    if not rest:
        return None
    quote = rest[0]
    if quote in _QUOTES:
        closers = _CLOSING.get(quote, quote)
        body = rest[1:]
        for position, char in enumerate(body):
            if char in closers and (position == 0 or body[position - 1] != "\\") and _VALUE_END.match(body, position + 1):
                return body[:position]
        return body.split("\n", 1)[0]  # unterminated (truncated answer): up to the end of the line
    return rest.split("\n", 1)[0].rstrip(" ,;}")


def _clean_text(value: str) -> str:
    value = value.replace("\\'", "'").replace('\\"', '"').replace("\\n", " ")
    value = " ".join(value.split()).strip(_QUOTES + " ,")
    # A list of feature phrases glued to the end of the action ("... lives.[`a`, `b`]").
    value = re.sub(r"(?<=[.!?])\s*\[[^\[\]]*\]?\s*$", "", value).strip()
    return value


@dataclass(frozen=True)
class FieldResult:
    value: Optional[str]
    method: str  # "json", "literal", "scan" or "failed"
    reason: str = ""


def extract_field(text: Any, key: str = ACTION_KEY) -> FieldResult:
    """Recover one string field (by default ``Human Action``) from a messy model answer.

    Tries the whole answer as a structured object (:func:`parse_structured`), then scans for
    ``key: value`` with forgiving quoting. The key matches case-, space- and underscore-
    insensitively. ``method`` says which worked; ``reason`` says why nothing did.

    >>> extract_field("{'Human Action': 'I praise India's heritage.', 'Feature Attributions': []}").value
    "I praise India's heritage."
    >>> result = extract_field("I'm sorry, but I can't assist with that request.")
    >>> result.value is None, "refused" in result.reason
    (True, True)
    """
    if not isinstance(text, str) or not text.strip():
        return FieldResult(None, "failed", "empty answer")
    wanted = _norm_key(key)
    structured_error = ""
    try:
        obj = parse_structured(text, kind=dict)
    except ParseError as err:
        obj, structured_error = None, str(err)
    if isinstance(obj, dict):
        for k, v in obj.items():
            if _norm_key(k) == wanted:
                cleaned = _clean_text(v) if isinstance(v, str) else ""
                if cleaned:
                    return FieldResult(cleaned, "json", "")
                break
    scanned = _scan_field(text.strip()[:MAX_PARSE_CHARS], key)
    cleaned = _clean_text(scanned) if scanned is not None else ""
    if cleaned:
        return FieldResult(cleaned, "scan", "")
    if scanned is not None:
        return FieldResult(None, "failed", f"the {key!r} field is empty")
    if _REFUSAL.match(text.strip()):
        return FieldResult(None, "failed", f"no {key!r} field: the model refused ({_excerpt(text)})")
    return FieldResult(None, "failed", f"no {key!r} field ({structured_error or _excerpt(text)})")


# ---------------------------------------------------------------------------------------------
# The importer
# ---------------------------------------------------------------------------------------------

@dataclass
class LensImport:
    """Result of :func:`import_value_action_lens`."""

    dataset: Any  # datasets.Dataset with ITEM_FEATURES
    failures: List[Dict[str, Any]]  # one per unrecovered row: row, index, reason, ...
    n_rows: int
    metadata: Dict[str, Any] = field(default_factory=dict)
    methods: Dict[str, int] = field(default_factory=dict)  # how many actions each parser step recovered
    seconds: float = 0.0

    @property
    def n_recovered(self) -> int:
        return len(self.dataset)


def _read_lens_table(source: Union[str, Path], cache_dir: Optional[str] = None):
    """The raw corpus as a :class:`datasets.Dataset` (CSV, or a zip holding it; a path or URL)."""
    import datasets

    source = str(source)
    is_url = "://" in source
    if not is_url:
        path = Path(source).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.csv")) + sorted(path.glob("*.zip"))
            if not found:
                raise FileNotFoundError(f"{path} holds no .csv or .zip file of the corpus (expected {LENS_FILE})")
            path = found[0]
        if not path.exists():
            raise FileNotFoundError(
                f"no value-action corpus at {path}; give the path of {LENS_FILE} (or its .zip), or a URL such as {LENS_RAW_URL}")
        source = str(path)
    # keep_default_na=False: cells are read verbatim ("NA" stays "NA", an empty cell is "").
    table = datasets.load_dataset("csv", data_files=source, split="train", cache_dir=cache_dir, keep_default_na=False)
    missing = [c for c in LENS_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: not the value-action corpus: missing column(s) {missing}; it has {table.column_names}")
    return table


def _index_column(columns: List[str]) -> Optional[str]:
    for name in columns:
        if name not in LENS_COLUMNS:
            return name  # the first unnamed index column
    return None


def import_value_action_lens(
    source: Union[str, Path],
    seed: int = 0,
    train_fraction: float = 1 / 3,
    cache_dir: Optional[str] = None,
) -> LensImport:
    """Import the ValueActionLens corpus into the item schema.

    ``source``: the CSV, the released zip, a folder holding either, or a URL of either (for example
    :data:`LENS_RAW_URL`). Splits are assigned per scene from ``seed`` (``train_fraction`` of the
    scenes are ``train``). Unrecoverable rows come back in :attr:`LensImport.failures`, each with its
    0-based data row, the corpus index column's value, its cells and the reason.
    """
    from vat_hf.data.hub import assign_splits, items_metadata, polarity_of
    from vat_hf.data.schema import to_dataset

    started = time.perf_counter()
    table = _read_lens_table(source, cache_dir=cache_dir)
    index_col = _index_column(table.column_names)
    cols = table.to_dict()
    n_rows = len(table)
    rows: List[Dict[str, Any]] = []
    failures: List[Dict[str, Any]] = []
    methods: Dict[str, int] = {}
    seen_ids: Dict[str, int] = {}
    for row in range(n_rows):
        country = str(cols["country"][row] or "").strip()
        topic = str(cols["topic"][row] or "").strip()
        item_name = str(cols["value"][row] or "").strip()
        polarity_raw = str(cols["polarity"][row] or "").strip()
        where = {"row": row, "index": cols[index_col][row] if index_col else row, "country": country,
                 "topic": topic, "value": item_name, "polarity": polarity_raw}
        problems = []
        if not country:
            problems.append("empty 'country'")
        if not topic:
            problems.append("empty 'topic'")
        micro = basic = None
        try:
            micro = canonical_micro_value(item_name)
            basic = MICRO_VALUES[micro]
        except UnknownValueError:
            problems.append(f"'value' {item_name!r} is not one of the 56 value-survey items")
        try:
            polarity = polarity_of(polarity_raw)
        except ValueError as err:
            polarity = None
            problems.append(f"'polarity': {err}")
        result = extract_field(cols["generation_prompt"][row], ACTION_KEY)
        if result.value is None:
            problems.append(result.reason)
        if problems:
            failures.append({**where, "reason": "; ".join(problems), "excerpt": _excerpt(cols["generation_prompt"][row], 120)})
            continue
        methods[result.method] = methods.get(result.method, 0) + 1
        scene_id = f"vl/{slug(country)}/{slug(topic)}"
        item_id = f"{scene_id}/{slug(micro)}/{'pos' if polarity > 0 else 'neg'}"
        if item_id in seen_ids:  # the corpus has one row per cell; keep a repeat under its own id
            item_id = f"{item_id}/r{row}"
        seen_ids[item_id] = row
        rows.append({
            "id": item_id, "scene_id": scene_id, "country": country, "domain": topic,
            "scenario": lens_scenario(country, topic), "action": result.value, "value": basic,
            "micro_value": micro, "polarity": polarity, "split": "",
        })
    splits = assign_splits({r["scene_id"] for r in rows}, seed=seed, train_fraction=train_fraction)
    for r in rows:
        r["split"] = splits[r["scene_id"]]
    metadata = {
        "source": "ValueActionLens (huashen218/value_action_gap, value_action_gap_full_data_generation)",
        "source_location": str(source),
        "generator": "gpt-4o (by the corpus authors)",
        "scenario_template": SCENARIO_TEMPLATE,
        "seed": seed,
        "train_fraction": train_fraction,
        "rows_in_source": n_rows,
        "rows_recovered": len(rows),
        "rows_unrecovered": len(failures),
        "parser_methods": methods,
        "citation": LENS_CITATION,
        "license": "see the source repository huashen218/value_action_gap",
    }
    dataset = to_dataset(rows)
    dataset.info.description = json.dumps(items_metadata(metadata), ensure_ascii=False)
    seconds = time.perf_counter() - started
    if failures:
        logger.warning("value-action corpus: %d of %d rows could not be recovered (first: row %d, %s)",
                       len(failures), n_rows, failures[0]["row"], failures[0]["reason"])
    return LensImport(dataset=dataset, failures=failures, n_rows=n_rows, metadata=metadata, methods=methods, seconds=seconds)
