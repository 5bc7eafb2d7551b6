"""Configuration checked whole, from the dataclasses' own type hints, before anything is loaded.

Every configuration of vat-hf is a dataclass (``ExperimentConfig`` and its sections,
``EvalConfig``, ``DataConfig``, ``InterventionConfig``, ``MetricConfig``, ...). Its fields' type
hints are the rules: the type, and a range or length written into the hint with
``annotated_types`` (``Annotated[int, Ge(1)]``; ``transformers.HfArgumentParser`` reads the bare
type and ignores the annotation). :func:`check_fields`, called by each dataclass's
``__post_init__``, checks every field against its hint with pydantic's strict validation (a
``"zero"`` for an ``int`` seed, a ``-2`` for a ``Ge(1)`` count, a ``"big"`` batch budget, a
``"rlhf"`` for a ``Literal`` are refused, whichever way the dataclass was built), so a field
added later is checked without new code. ``Checked(T)`` in a field's annotation checks the
value against ``T`` instead of the declared type (for a field whose command-line type differs
from what its ``__post_init__`` makes of it, such as a JSON string read into a mapping).

For experiment recipes, :func:`load_yaml` reads the YAML keeping where each key is (a YAML
error names the file, line and column, and so does every later error about a key), refusing a
key given twice, and :func:`from_mapping` builds a dataclass and its nested sections from the
mapping: a top level that is not a mapping, an unknown key (with the closest known ones), a
wrong type or range each fail with ``file:line:column: section.key = value: problem`` and the
field's help as the fix. :func:`safe_name` and :func:`check_inside` keep names that become file
names and the paths made from them inside the output folder.

Why pydantic: it is the well-kept library for validating values against Python type hints
(``Literal``, ``Optional``, nested containers, ``annotated_types`` constraints), with messages a
person can read; it is already installed (typer depends on it), and it leaves the dataclasses
plain dataclasses, as TRL's and transformers' argument parsers need them.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from vat_hf.errors import RecipeError, VatHfError

Key = Tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Checked:
    """In ``Annotated[Declared, Checked(T)]``: check the field's value against ``T``, not
    ``Declared`` (which the command-line parser uses)."""

    hint: Any


# ----------------------------------------------------------------------------------------------
# Field values against their type hints


@lru_cache(maxsize=None)
def field_hints(cls) -> Dict[str, Any]:
    """A dataclass's resolved type hints, annotations kept."""
    return typing.get_type_hints(cls, include_extras=True)


def _checked_hint(hint):
    """The hint to check against: a :class:`Checked` annotation's, else ``hint`` itself."""
    if typing.get_origin(hint) is typing.Annotated:
        for extra in hint.__metadata__:
            if isinstance(extra, Checked):
                return extra.hint
    return hint


def _dataclass_of(hint) -> Tuple[Optional[type], bool]:
    """(the dataclass a hint holds, whether as a list of them); (None, False) for other hints."""
    hint = _checked_hint(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint, False
    if typing.get_origin(hint) in (list, List, Sequence):
        args = typing.get_args(hint)
        if args and dataclasses.is_dataclass(args[0]) and isinstance(args[0], type):
            return args[0], True
    return None, False


@lru_cache(maxsize=None)
def _adapter(hint):
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(hint, config=ConfigDict(strict=True, arbitrary_types_allowed=True))


def check_value(hint, value) -> Any:
    """``value`` checked against ``hint`` (strict: no string is read as a number or a boolean);
    returns it as validated (an int given for a float becomes a float). Raises ``ValueError``
    with a readable problem.

    >>> from annotated_types import Ge
    >>> check_value(typing.Annotated[int, Ge(1)], 3), check_value(float, 1)
    (3, 1.0)
    >>> check_value(typing.Annotated[int, Ge(1)], -2)
    Traceback (most recent call last):
    ...
    ValueError: must be >= 1
    >>> check_value(typing.Literal["hf", "vllm"], "torch")
    Traceback (most recent call last):
    ...
    ValueError: must be one of 'hf', 'vllm'
    """
    from pydantic import ValidationError

    hint = _checked_hint(hint)
    try:
        return _adapter(hint).validate_python(value)
    except ValidationError as err:
        raise ValueError(_problem(err, hint)) from None


def _problem(err, hint) -> str:
    """pydantic's first error, in the words of this project's messages."""
    first = err.errors(include_url=False)[0]
    kind, ctx, msg = first.get("type", ""), first.get("ctx") or {}, first.get("msg", "")
    bounds = {"greater_than_equal": ">= {ge}", "greater_than": "> {gt}", "less_than_equal": "<= {le}",
              "less_than": "< {lt}"}
    if kind in bounds:
        return "must be " + bounds[kind].format(**ctx)
    if kind == "literal_error":
        choices = _literal_choices(hint)
        if choices:
            return "must be one of " + ", ".join(repr(c) for c in choices)
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    names = {"int_type": "a whole number", "int_from_float": "a whole number", "float_type": "a number",
             "string_type": "a string", "bool_type": "true or false", "dict_type": "a mapping",
             "list_type": "a list"}
    if kind in names:
        return f"must be {names[kind]}" + (" (or null)" if _optional(hint) else "")
    return msg[0].lower() + msg[1:] if msg else kind


def _literal_choices(hint) -> List[Any]:
    found: List[Any] = []
    for arg in (hint, *typing.get_args(hint)):
        if typing.get_origin(arg) is typing.Literal:
            found += list(typing.get_args(arg))
        elif typing.get_origin(arg) is typing.Annotated:
            found += _literal_choices(typing.get_args(arg)[0])
    return found


def _optional(hint) -> bool:
    return type(None) in typing.get_args(hint)


def key_label(key: Key) -> str:
    """A key path as a recipe reader writes it.

    >>> key_label(("interventions", 1, "name")), key_label(())
    ('interventions[1].name', '')
    """
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class FieldError(RecipeError):
    """A value that does not fit its field; ``key`` is the field's name (or a path of keys below
    the dataclass that raised it, such as ``("interventions", 1, "name")``). The recipe reader
    (:func:`from_mapping`) adds the file, line and section."""

    def __init__(self, key, value: Any, problem: str, fix: Optional[str] = None):
        self.key: Key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        self.value, self.problem = value, problem
        super().__init__(f"{key_label(self.key)} = {value!r}: {problem}", fix)

    def __reduce__(self):
        return type(self), (self.key, self.value, self.problem, self.fix)


def field_help(cls, name: str) -> Optional[str]:
    """The ``help`` of a dataclass field (its metadata), if it has one."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            text = f.metadata.get("help") if f.metadata else None
            return f"{name}: {text}" if text else None
    return None


def check_fields(obj) -> None:
    """Check every field of dataclass instance ``obj`` against its type hint (see the module
    docstring), in place (validated values are set back); nested dataclasses must be instances
    of their class (they checked themselves). Raises :class:`FieldError`, naming the field."""
    cls = type(obj)
    for f in dataclasses.fields(cls):
        hint = field_hints(cls)[f.name]
        value = getattr(obj, f.name)
        nested, as_list = _dataclass_of(hint)
        if nested is not None:
            if as_list and not isinstance(value, list):
                raise FieldError(f.name, value, f"must be a list of {nested.__name__}")
            for i, v in enumerate(value if as_list else [value]):
                if not isinstance(v, nested):
                    raise FieldError((f.name, i) if as_list else f.name, v, f"must be a {nested.__name__}")
            continue
        try:
            checked = check_value(hint, value)
        except ValueError as err:
            raise FieldError(f.name, value, str(err), fix=field_help(cls, f.name)) from None
        if checked is not value and type(checked) is not type(value):
            setattr(obj, f.name, checked)


# ----------------------------------------------------------------------------------------------
# Recipes: YAML with positions, mappings into dataclasses


class RecipeSource:
    """Where a recipe's keys are: ``at(("data", "max_scenes"))`` gives ``"r.yaml:5:15"`` (the
    key's value), or the nearest enclosing key's place, or the file name."""

    def __init__(self, name: Optional[str], marks: Optional[Dict[Key, Tuple[int, int]]] = None):
        self.name = name
        self.marks = marks or {}
        self.overridden: Dict[Key, str] = {}  # key path -> the command-line flag that set it

    def at(self, key: Key = ()) -> str:
        key = tuple(key)
        for length in range(len(key), 0, -1):
            if key[:length] in self.overridden:
                return f"command line ({self.overridden[key[:length]]})"
        while key and key not in self.marks:
            key = key[:-1]
        if key in self.marks:
            line, column = self.marks[key]
            return f"{self.name or 'recipe'}:{line}:{column}"
        return str(self.name) if self.name else "recipe"

    def prefix(self, key: Key = ()) -> str:
        """``"<place>: "`` for a message, or ``""`` for a mapping that came from no file."""
        if self.name is None and not any(tuple(key)[:n] in self.overridden for n in range(1, len(key) + 1)):
            return ""
        return self.at(key) + ": "


def _walk(node, key: Key, marks: Dict[Key, Tuple[int, int]], name: str) -> None:
    marks[key] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: Dict[Any, int] = {}
        for key_node, value_node in node.value:
            k = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if k in seen:
                raise RecipeError(f"{name}:{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}: key {k!r} "
                                  f"is given twice (first on line {seen[k]})", fix="keep one of them")
            if k is not None:
                seen[k] = key_node.start_mark.line + 1
            _walk(value_node, key + (k,), marks, name)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, key + (i,), marks, name)


def yaml_error(path, err: yaml.YAMLError) -> RecipeError:
    """A YAML syntax error as a :class:`RecipeError` naming the file, line and column."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    place = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    context_mark = getattr(err, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        problem = f"{problem} ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    fix = "YAML indents with spaces, not tabs" if "\t" in problem or "tab" in problem else \
        "fix the YAML syntax there (an unclosed bracket or quote, or a bad indent, is often a line or two above)"
    return RecipeError(f"{place}: not valid YAML: {problem}", fix=fix)


def load_yaml(path) -> Tuple[Any, RecipeSource]:
    """(the document, where each key is) of a YAML file: only ``yaml.safe_load``'s types; a
    syntax error or a key given twice is a :class:`RecipeError` naming the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise RecipeError(f"{path}:{line}: not UTF-8 text ({err.reason})", fix="save the recipe as UTF-8") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        marks: Dict[Key, Tuple[int, int]] = {}
        if node is not None:
            _walk(node, (), marks, str(path))
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from None
    finally:
        loader.dispose()
    return data, RecipeSource(str(path), marks)


def from_mapping(cls, raw: Any, source: Optional[RecipeSource] = None, key: Key = (), section: str = ""):
    """An instance of dataclass ``cls`` from a recipe mapping: unknown keys refused (with the
    closest known ones), nested dataclass sections (and lists of them) built the same way, every
    field checked by the class's own ``__post_init__`` (:func:`check_fields`); every error names
    the file, line and column (``source``) and the key (``section.key``)."""
    source = source or RecipeSource(None)
    what = section or "the recipe"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{source.prefix(key)}{what} must be a mapping of keys to values, not a {type(raw).__name__}",
                          fix=f"write it as `key: value` lines; its keys: {', '.join(f.name for f in dataclasses.fields(cls))}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    for name in raw:
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=3)
            raise RecipeError(f"{source.prefix(key + (name,))}{what}: unknown key {name!r}"
                              + (f" (did you mean {' or '.join(close)}?)" if close else ""),
                              fix=f"the keys of {section or 'a recipe'} are: {', '.join(known)}")
    kwargs: Dict[str, Any] = {}
    for name, value in raw.items():
        nested, as_list = _dataclass_of(field_hints(cls)[name])
        inner = f"{section}.{name}" if section else name
        if nested is None or value is None:
            kwargs[name] = value
        elif as_list:
            if not isinstance(value, list):
                raise RecipeError(f"{source.prefix(key + (name,))}{inner} must be a list, not a {type(value).__name__}",
                                  fix=f"write each entry on a line starting with '- ' under {name}:")
            kwargs[name] = [from_mapping(nested, v, source, key + (name, i), f"{inner}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[name] = from_mapping(nested, value, source, key + (name,), inner)
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"{source.prefix(key)}{what}: {missing[0]!r} is required", fix=field_help(cls, missing[0]))
    # Everything raised while building this class comes from its own __post_init__ (nested
    # sections were built above and placed their own errors).
    try:
        return cls(**kwargs)
    except FieldError as err:  # one of its fields (or a key below it): point there
        label = key_label((section,) + err.key if section else err.key)
        raise RecipeError(f"{source.prefix(key + err.key)}{label} = {err.value!r}: {err.problem}", fix=err.fix) from None
    except VatHfError as err:
        raise RecipeError(f"{source.prefix(key)}{what}: {err.message}", fix=err.fix) from None
    except ValueError as err:
        raise RecipeError(f"{source.prefix(key)}{what}: {err}") from None


# ----------------------------------------------------------------------------------------------
# Names that become file names, paths that must stay inside a folder

SAFE_NAME_CHARS = "letters, digits, '.', '_' and '-'"


def name_problem(name: Any, reserved: Sequence[str] = ()) -> Optional[Tuple[str, str]]:
    """(problem, fix) when ``name`` cannot name files: it must be a file name on every system
    (:data:`SAFE_NAME_CHARS`, starting with a letter or digit, at most 100 characters: no
    ``/``, no ``..``, not absolute) and none of ``reserved`` (compared without case: two names
    that differ only in case are one file on some file systems). None when it can.

    >>> name_problem("sft-lora_2"), name_problem("../../escape")[0], name_problem("Baseline", ["baseline"])[0]
    (None, 'not a safe file name', 'reserved: vat-hf writes its own files under that name')
    """
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        return ("not a safe file name",
                f"use {SAFE_NAME_CHARS} only, at most 100, starting with a letter or digit (it names files and folders)")
    if name.lower() in {r.lower() for r in reserved}:
        return "reserved: vat-hf writes its own files under that name", "choose another name"
    return None


def safe_name(name: Any, what: str, reserved: Sequence[str] = ()) -> str:
    """``name`` when :func:`name_problem` finds none, else a :class:`RecipeError` naming ``what``.

    >>> safe_name("../../escape", "intervention name")
    Traceback (most recent call last):
    ...
    vat_hf.errors.RecipeError: intervention name '../../escape': not a safe file name
      fix: use letters, digits, '.', '_' and '-' only, at most 100, starting with a letter or digit (it names files and folders)
    """
    problem = name_problem(name, reserved)
    if problem is not None:
        raise RecipeError(f"{what} {name!r}: {problem[0]}", fix=problem[1])
    return name


def check_inside(path, root, what: str) -> Path:
    """``path`` resolved (symbolic links followed), when it lies inside ``root``; else a
    :class:`RecipeError`. Nothing needs to exist yet."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise RecipeError(f"{what} {path} resolves to {resolved}, outside the output folder {base}",
                          fix="keep every file of a run inside its output_dir (check for a symbolic link there)")
    return resolved
