"""The forgiving parser of model output: structured objects and single fields from messy answers.

Generator answers (the ValueActionLens corpus's GPT-4o answers, the two-stage builder's, a mapped
dataset's JSON cells) are rarely clean JSON: Python dict literals with single quotes (some with
unescaped apostrophes), Markdown code fences, chatter before and after the object, trailing
commas, curly quotes, truncated answers, refusals. :func:`parse_structured` recovers the first
object or list; :func:`extract_field` recovers one string field, falling back to a forgiving
``key: value`` scan where nothing parses, and says which step worked or why none did.

Used by :mod:`vat_hf.data.lens`, :mod:`vat_hf.data.mapping` (``action_field``) and
:mod:`vat_hf.data.generate`; it knows nothing of items.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from vat_hf.errors import VatHfError
from vat_hf.values import name_key


class ParseError(VatHfError, ValueError):
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
        raise ParseError(f"the model refused ({excerpt(text)})")
    raise ParseError(f"no JSON object or Python literal found ({excerpt(text)})")


def excerpt(text: Any, n: int = 80) -> str:
    """``text`` on one line, cut to ``n`` characters, quoted: for error messages and failure records."""
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= n else flat[: n - 3] + "...")


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


def key_value(obj: Mapping[Any, Any], key: str) -> Any:
    """``obj``'s value under ``key``, matched case-, space- and punctuation-insensitively
    (``"human_action"`` finds ``"Human Action"``); None when there is none.

    >>> key_value({"Human Action": "I vote."}, "human_action")
    'I vote.'
    """
    wanted = name_key(key)
    return next((v for k, v in obj.items() if name_key(k) == wanted), None)


@dataclass(frozen=True)
class FieldResult:
    value: Optional[str]
    method: str  # "json", "literal", "scan" or "failed"
    reason: str = ""


def extract_field(text: Any, key: str) -> FieldResult:
    """Recover one string field (``key``, e.g. ``"Human Action"``) from a messy model answer.

    Tries the whole answer as a structured object (:func:`parse_structured`), then scans for
    ``key: value`` with forgiving quoting. The key matches case-, space- and underscore-
    insensitively. ``method`` says which worked; ``reason`` says why nothing did.

    >>> extract_field("{'Human Action': 'I praise India's heritage.', 'Feature Attributions': []}", "Human Action").value
    "I praise India's heritage."
    >>> result = extract_field("I'm sorry, but I can't assist with that request.", "Human Action")
    >>> result.value is None, "refused" in result.reason
    (True, True)
    """
    if not isinstance(text, str) or not text.strip():
        return FieldResult(None, "failed", "empty answer")
    structured_error = ""
    try:
        obj = parse_structured(text, kind=dict)
    except ParseError as err:
        obj, structured_error = None, str(err)
    found = key_value(obj, key) if isinstance(obj, dict) else None
    cleaned = _clean_text(found) if isinstance(found, str) else ""
    if cleaned:
        return FieldResult(cleaned, "json", "")
    scanned = _scan_field(text.strip()[:MAX_PARSE_CHARS], key)
    cleaned = _clean_text(scanned) if scanned is not None else ""
    if cleaned:
        return FieldResult(cleaned, "scan", "")
    if scanned is not None:
        return FieldResult(None, "failed", f"the {key!r} field is empty")
    if _REFUSAL.match(text.strip()):
        return FieldResult(None, "failed", f"no {key!r} field: the model refused ({excerpt(text)})")
    return FieldResult(None, "failed", f"no {key!r} field ({structured_error or excerpt(text)})")
