"""Application forms as JSON Schema: checking schemas, checking forms.

Departments describe their form as a JSON Schema (draft 2020-12) object;
citizens' answers are checked against it, and every problem is reported per
field in the citizen's language (``form.<field>`` → messages).

A form schema is data from outside, so it may only describe the form:

- it never reaches the network or the disk: ``$ref`` points inside the
  same schema (``#`` or ``#/…``), to a place that holds a subschema, and
  nothing that moves the base URI (``$id``, anchors, dynamic references) is
  accepted. Forms are validated with a registry that cannot retrieve
  anything, so even a schema stored before these rules fetches nothing;
- checking a form is bounded work, whatever the schema and the form: every
  subschema entered, keyword applied, value compared, character scanned and
  error made is paid for from a budget of :data:`MAX_FORM_WORK` units
  (about a microsecond each), and a form that needs more is refused whole
  (a schema alone cannot bound it: a wide ``anyOf`` under ``items`` costs
  its width once per item). Regular expressions (``pattern``,
  ``patternProperties``, ``format: regex``) run on RE2, which refuses what
  needs backtracking and scans in time linear in the text (times the
  pattern's program size, which is what a scan is charged); ``uniqueItems``
  hashes instead of comparing every pair;
- checking the schema is bounded too: size, depth, number of subschemas,
  compiled regular expressions, and how far following references unfolds
  it (no loops, at most :data:`MAX_SCHEMA_EXPANSION` subschemas and
  :data:`MAX_SCHEMA_DEPTH` levels, so validation never recurses deeply).

:func:`schema_problems` is the one rule, used where schemas are saved and
again before a stored schema checks a form.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import re2
import referencing
import referencing.exceptions
import referencing.jsonschema
from django.utils.translation import gettext as _
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError

MAX_SCHEMA_BYTES = 64 * 1024
# Nesting of the schema document (objects and arrays), and of subschemas
# once references are followed: jsonschema's checks recurse, and a few
# hundred levels would exhaust the stack.
MAX_SCHEMA_DEPTH = 32
# Subschemas in the document, and those one form may meet once every
# reference is followed: a handful of $defs that reference each other twice
# over would otherwise unfold to millions ("billion laughs"). Checking a
# schema against the meta-schema costs about half a millisecond per
# subschema.
MAX_SCHEMA_EXPANSION = 2_000
# RE2 program instructions (forward and reverse) all distinct patterns of
# one schema compile to: about a microsecond each to compile, and a scan may
# cost the program size per character. A Chinese-name pattern such as
# ^[\p{Han}·]{2,30}$ takes 4,980.
MAX_SCHEMA_REGEX_PROGRAM = 50_000
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_DEPTH = 16
# Units of work (about a microsecond each) checking one form may take. The
# test suite's SIMPLE_FORM takes 83; a form of a hundred fields and twenty
# family members of ten, about 12,500.
MAX_FORM_WORK = 50_000
# Errors collected from one form (each may stand for several messages).
MAX_FORM_ERRORS = 100

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Where draft 2020-12 keeps subschemas (as the meta-schema reads them).
_SCHEMA_IN_VALUE = (
    "additionalProperties",
    "contains",
    "contentSchema",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMAS_IN_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMAS_IN_MAP = (
    "$defs",
    "definitions",
    "dependencies",
    "dependentSchemas",
    "patternProperties",
    "properties",
)
# Those that hold subschemas only for references, or not at all for
# jsonschema (the meta-schema still reads "dependencies"): not applied
# where they stand.
_STORES = frozenset({"$defs", "definitions", "contentSchema", "dependencies"})

# Keywords that move the base URI or resolve dynamically (and so could make
# "#/…" mean another document), and the unevaluated* keywords, whose
# implementation runs stdlib regexes and re-validates subschemas repeatedly;
# a form needs none of them (additionalProperties does the work of
# unevaluatedProperties).
_REFUSED_KEYWORDS = (
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$dynamicRef",
    "$recursiveAnchor",
    "$recursiveRef",
    "unevaluatedProperties",
    "unevaluatedItems",
)

Path = tuple[str | int, ...]


class FormSchemaUnusable(Exception):
    """A stored form schema breaks :func:`schema_problems`: no form can be
    checked against it until the department fixes it."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- JSON values ---------------------------------------------------------------------------


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels. Level by
    level, without recursion, so no value can exhaust the stack."""
    level = [value]
    for _depth in range(limit):
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                below.extend(node.values())
            elif isinstance(node, list):
                below.extend(node)
        level = below
    return any(isinstance(node, dict | list) for node in level)


def _utf8_size(value: Any) -> int | None:
    """Bytes ``value`` takes as JSON in UTF-8; None if a string or a name
    holds a lone surrogate, which UTF-8 cannot carry."""
    try:
        return len(json.dumps(value, ensure_ascii=False).encode())
    except UnicodeEncodeError:
        return None


def _holds_nul(value: Any) -> bool:
    """Whether a string or a name in ``value`` holds NUL, which no database
    text (PostgreSQL's jsonb included) can store. Iterative."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _canonical(value: Any) -> Any:
    """``value`` such that equal JSON values dump alike (1 and 1.0, key order),
    and true stays apart from 1. Forms are at most MAX_FORM_DEPTH deep."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_canonical(each) for each in value]
    if isinstance(value, dict):
        return {name: _canonical(each) for name, each in value.items()}
    return value


# --- The work budget -----------------------------------------------------------------------


class _OutOfWork(Exception):
    """Checking a form used up :data:`MAX_FORM_WORK`."""


@dataclass
class _Work:
    """What checking one form may still spend, and the schema's compiled
    patterns."""

    left: int
    regexes: dict[str, Any] = field(default_factory=dict)


_WORK: ContextVar[_Work | None] = ContextVar("form_schema_work", default=None)


def _spend(units: int) -> None:
    work = _WORK.get()
    if work is None:  # not checking a form: building a validator
        return
    work.left -= units
    if work.left < 0:
        raise _OutOfWork


def _width(value: Any) -> int:
    return len(value) if isinstance(value, dict | list) else 0


# Characters times program instructions a scan may go through in a unit:
# when its automaton runs out of memory, RE2 simulates every instruction at
# every character (measured at up to 25 ns a pair).
_REGEX_STEPS_PER_UNIT = 40


def _metered(keyword: str, check: Callable[..., Any]) -> Callable[..., Iterator[ValidationError]]:
    """``check``, the implementation of ``keyword``, paying for its work:
    a unit, plus one per member of its value and of the instance it may
    walk, plus what :data:`_EXTRA_COST` says; then for every error it
    yields."""
    extra = _EXTRA_COST.get(keyword)

    def metered(
        validator: Any, value: Any, instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        cost = 1 + _width(value) + _width(instance)
        _spend(cost + extra(value, instance) if extra else cost)
        for error in check(validator, value, instance, schema) or ():
            # One made here (not passed up from a subschema: those already
            # have a schema path) also paid for its message, which may
            # spell out the whole instance.
            _spend(2 if error.schema_path else 20 + len(error.message) // 64)
            yield error

    return metered


def _applicable(schema: dict[str, Any]) -> Any:
    # jsonschema runs this whenever it enters a subschema (and when it
    # makes a validator for one): it walks every key, keyword or not.
    _spend(10 + len(schema))
    return schema.items()


# --- Keywords ------------------------------------------------------------------------------

# A department's pattern is compiled once per schema and kept with it; its
# memory bound caps what the program and its automaton may hold, and how
# long refusing one takes (about 20 ms). A form's "format: regex" answer is
# compiled each time, with less (about 2 ms to refuse).
_SCHEMA_RE2 = re2.Options()
_SCHEMA_RE2.log_errors = False
_SCHEMA_RE2.max_mem = 1 << 20
_ANSWER_RE2 = re2.Options()
_ANSWER_RE2.log_errors = False
_ANSWER_RE2.max_mem = 64 << 10
# About the longest RE2 takes to compile (or refuse) an answer, in units.
_ANSWER_REGEX_COST = 4_000


def _regex(pattern: str) -> Any:
    """The schema's ``pattern``, compiled when the schema was checked."""
    work = _WORK.get()
    if work is not None and pattern in work.regexes:
        return work.regexes[pattern]
    return re2.compile(pattern, _SCHEMA_RE2)


def _search(regex: Any, text: str) -> bool:
    _spend(10 + len(text) * regex.programsize // _REGEX_STEPS_PER_UNIT)
    return regex.search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # JSON Schema patterns are not anchored: search, not fullmatch.
    if validator.is_type(instance, "string") and not _search(_regex(pattern), instance):
        yield ValidationError("does not match the pattern")


def _pattern_properties(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        regex = _regex(pattern)
        for name, value in instance.items():
            if _search(regex, name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema's own version matches patternProperties with the re module.
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [_regex(p) for p in schema.get("patternProperties", {})]
    extras = [
        name
        for name in instance
        if name not in properties and not any(_search(r, name) for r in patterns)
    ]
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif additional is False and extras:
        yield ValidationError("has unexpected properties")


_KEYS = json.JSONEncoder(sort_keys=True, check_circular=False)


def _unique_items(
    validator: Any, unique: bool, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema compares objects pairwise: a thousand of them took seconds.
    if not (unique and validator.is_type(instance, "array")):
        return
    seen: set[str] = set()
    for item in instance:
        key = _KEYS.encode(_canonical(item))
        _spend(4 + len(key) // 16)
        if key in seen:
            yield ValidationError("has non-unique elements")
            return
        seen.add(key)


def _same(one: Any, two: Any) -> bool:
    """Whether two JSON values are equal as JSON Schema has it (1 equals
    1.0, true is not 1), a unit for every pair of values compared."""
    pending = [(one, two)]
    while pending:
        a, b = pending.pop()
        _spend(1)
        if a is b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                return False
            pending.extend((a[name], b[name]) for name in a)
        elif isinstance(a, list | dict | bool) or isinstance(b, list | dict | bool):
            return False  # different kinds, or true and false
        elif a != b:  # strings, numbers, null
            return False
    return True


def _const(validator: Any, const: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # jsonschema's own compares recursively, for free, and spells out both.
    if not _same(instance, const):
        yield ValidationError("is not the expected value")


def _enum(validator: Any, enum: list[Any], instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not any(_same(each, instance) for each in enum):
        yield ValidationError("is not one of the allowed values")


def _multiple_of(
    validator: Any, multiple: float, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    try:
        yield from Draft202012Validator.VALIDATORS["multipleOf"](
            validator, multiple, instance, schema
        )
    except OverflowError:
        # jsonschema divides as floats first, and an integer past 1e308
        # has none: divide exactly.
        if (Fraction(instance) / Fraction(multiple)).denominator != 1:
            yield ValidationError("is not a multiple")


# The formats a form may name (README, docs/departments.md), listed rather
# than whatever jsonschema finds importable: another package installed
# beside it must not widen what schemas may say. A checker missing (its
# library not installed) fails here, at import, not on a citizen's form.
FORMATS = (
    "date",
    "time",
    "date-time",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "uuid",
)
_FORMATS = FormatChecker(formats=FORMATS)


@_FORMATS.checks("regex", raises=re2.error)
def _is_regex(instance: object) -> bool:
    if isinstance(instance, str):
        _spend(_ANSWER_REGEX_COST)
        re2.compile(instance, _ANSWER_RE2)
    return True


def _text_cost(value: Any, instance: Any) -> int:
    return len(instance) // 8 if isinstance(instance, str) else 0


# Work beyond the widths of a keyword's value and instance, where it does
# more than walk them once (the scans of "pattern" are paid in _pattern).
_EXTRA_COST: dict[str, Callable[[Any, Any], int]] = {
    # Each string format's checker reads the text.
    "format": _text_cost,
    # Every name listed for each name present.
    "dependentRequired": lambda value, instance: sum(map(len, value.values())),
    # A pointer followed segment by segment.
    "$ref": lambda value, instance: 10 * value.count("/"),
}

_FormValidator = validators.create(
    meta_schema=Draft202012Validator.META_SCHEMA,
    validators={
        keyword: _metered(keyword, check)
        for keyword, check in {
            **Draft202012Validator.VALIDATORS,
            "additionalProperties": _additional_properties,
            "const": _const,
            "enum": _enum,
            "multipleOf": _multiple_of,
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "uniqueItems": _unique_items,
        }.items()
    },
    type_checker=Draft202012Validator.TYPE_CHECKER,
    format_checker=_FORMATS,
    id_of=Draft202012Validator.ID_OF,
    applicable_validators=_applicable,
)


def _never_retrieve(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class behind an alias mypy does not know


# Resolves references inside the schema itself and nowhere else.
_REGISTRY: referencing.Registry[Any] = referencing.Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]  # an attrs class behind an alias mypy does not know


# --- Checking schemas ----------------------------------------------------------------------

# For the meta-schema: its "format": "regex" would compile every pattern
# with the stdlib re module (which recurses, and refuses RE2's \p{Han});
# _structure_problems compiles them with RE2 instead.
_NO_FORMATS = FormatChecker(formats=())


@dataclass(frozen=True)
class _Examined:
    problems: list[str]
    # When there are none: every pattern of the schema, compiled, and where
    # false stands as a subschema that jsonschema enters itself.
    regexes: dict[str, Any] = field(default_factory=dict)
    falses: tuple[Path, ...] = ()
    # Formats nothing here checks: refused when a schema is saved; in a
    # schema stored before that rule, an annotation (as JSON Schema has it).
    unchecked_formats: tuple[str, ...] = ()


def _location(path: Path) -> str:
    return "/".join(str(p) for p in path) or "/"


def _at(path: Path, message: str) -> str:
    return _("位置 %(location)s：%(message)s") % {"location": _location(path), "message": message}


def _regex_problem(pattern: str, error: re2.error) -> str:
    reason = error.args[0] if error.args else ""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return _(
        "正则表达式 %(pattern)s 无法使用（%(reason)s）；不支持反向引用、环视等需要回溯的写法"
    ) % {"pattern": pattern, "reason": reason}


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[str, Path, Any]]:
    """``(keyword, relative path, subschema)`` for every subschema ``schema``
    holds. Values of the wrong shape are left to the meta-schema."""
    for keyword in _SCHEMA_IN_VALUE:
        if keyword in schema:
            yield keyword, (keyword,), schema[keyword]
    for keyword in _SCHEMAS_IN_LIST:
        if isinstance(value := schema.get(keyword), list):
            for index, each in enumerate(value):
                yield keyword, (keyword, index), each
    for keyword in _SCHEMAS_IN_MAP:
        if isinstance(value := schema.get(keyword), dict):
            for name, each in value.items():
                yield keyword, (keyword, name), each


def _examine(schema: Any, *, meta_checked: bool = False) -> _Examined:
    if not isinstance(schema, dict):
        return _Examined([_("申请表定义必须是 JSON 对象")])
    if _deeper_than(schema, MAX_SCHEMA_DEPTH):
        return _Examined([_("申请表定义嵌套过深（最多 %(n)s 层）") % {"n": MAX_SCHEMA_DEPTH}])
    size = _utf8_size(schema)
    if size is None:
        return _Examined([_("申请表定义含有无效字符（不成对的代理码元）")])
    if _holds_nul(schema):  # the admin and catalog files pass no JSON parser that refuses it
        return _Examined([_("申请表定义含有无效字符（NUL）")])
    if size > MAX_SCHEMA_BYTES:
        return _Examined([_("申请表定义过大")])
    if schema.get("type") != "object":
        return _Examined([_('申请表定义的顶层必须是 "type": "object"')])
    if not isinstance(schema.get("properties", {}), dict):
        return _Examined([_("properties 必须是对象")])
    return _structure_problems(schema, meta_checked=meta_checked)


def _structure_problems(schema: dict[str, Any], *, meta_checked: bool = False) -> _Examined:
    """Subschemas, keywords, regexes, the meta-schema (unless this schema
    passed it before: ``meta_checked``) and references, the cheap checks
    first."""
    problems: list[str] = []
    unchecked_formats: list[str] = []
    nodes: dict[Path, Any] = {(): schema}
    applied: dict[Path, list[Path]] = {}
    refs: dict[Path, str] = {}
    patterns: dict[str, Path] = {}
    falses: list[Path] = []
    pending: list[Path] = [()]
    while pending:
        path = pending.pop()
        node = nodes[path]
        applied[path] = []
        if not isinstance(node, dict):  # true / false
            continue
        for keyword in _REFUSED_KEYWORDS:
            if keyword in node:
                problems.append(_at(path, _("不支持 %(keyword)s") % {"keyword": keyword}))
        if "$schema" in node and (
            path or not isinstance(node["$schema"], str) or node["$schema"].rstrip("#") != DIALECT
        ):
            problems.append(
                _at(path, _("$schema 只能在顶层声明为 %(dialect)s") % {"dialect": DIALECT})
            )
        if isinstance(node.get("pattern"), str):
            patterns.setdefault(node["pattern"], (*path, "pattern"))
        if isinstance(node.get("patternProperties"), dict):
            for pattern in node["patternProperties"]:
                patterns.setdefault(pattern, (*path, "patternProperties"))
        if isinstance(node.get("$ref"), str):
            refs[path] = node["$ref"]
        if isinstance(node.get("format"), str) and node["format"] not in _FORMATS.checkers:
            unchecked_formats.append(
                _at(
                    (*path, "format"),
                    _("无法校验格式 %(format)s；可用的格式：%(formats)s")
                    % {"format": node["format"], "formats": ", ".join(sorted(_FORMATS.checkers))},
                )
            )
        for keyword, relative, child in _subschemas(node):
            if not isinstance(child, dict | bool):
                continue
            child_path = (*path, *relative)
            nodes[child_path] = child
            if len(nodes) > MAX_SCHEMA_EXPANSION:
                return _Examined(
                    [_("申请表定义过于复杂（超过 %(n)s 个子定义）") % {"n": MAX_SCHEMA_EXPANSION}]
                )
            pending.append(child_path)
            if child is False and keyword not in ("additionalProperties", "items"):
                falses.append(child_path)
            if keyword not in _STORES:
                applied[path].append(child_path)
    if problems:
        return _Examined(problems)

    # The first pattern RE2 refuses ends the check: refusing one can take
    # as long as compiling a large one.
    regexes: dict[str, Any] = {}
    program = 0
    for pattern, at in patterns.items():
        try:
            regex = re2.compile(pattern, _SCHEMA_RE2)
        except re2.error as exc:
            return _Examined([_at(at, _regex_problem(pattern, exc))])
        program += regex.programsize + regex.reverseprogramsize
        if program > MAX_SCHEMA_REGEX_PROGRAM:
            return _Examined(
                [
                    _at(
                        at,
                        _("正则表达式合计过于复杂（编译后超过 %(n)s 条指令）")
                        % {"n": MAX_SCHEMA_REGEX_PROGRAM},
                    )
                ]
            )
        regexes[pattern] = regex

    if not meta_checked:
        try:
            Draft202012Validator.check_schema(schema, format_checker=_NO_FORMATS)
        except SchemaError as exc:
            return _Examined([_at(tuple(exc.absolute_path), exc.message)])

    # Every reference must land on one of the subschemas just walked.
    where = {id(node): path for path, node in nodes.items()}
    resolver = _REGISTRY.resolver_with_root(
        referencing.jsonschema.DRAFT202012.create_resource(schema)
    )
    for path, ref in refs.items():
        at = (*path, "$ref")
        if not (ref == "#" or ref.startswith("#/")):
            problems.append(
                _at(at, _("只能引用本表单内的定义（# 或 #/…），不能引用 %(ref)s") % {"ref": ref})
            )
            continue
        try:
            target = resolver.lookup(ref).contents
        except (referencing.exceptions.Unresolvable, ValueError, TypeError):
            # A pointer may also name a member of a string or a list
            # (ValueError), or step into a number, boolean or null (TypeError).
            problems.append(_at(at, _("引用 %(ref)s 指向不存在的位置") % {"ref": ref}))
            continue
        if id(target) not in where:
            problems.append(_at(at, _("引用 %(ref)s 指向的不是表单定义") % {"ref": ref}))
            continue
        applied[path].append(where[id(target)])
    if problems:
        return _Examined(problems)

    unfolded = _unfolded(applied)
    if unfolded.looping is not None:
        return _Examined([_at(unfolded.looping, _("引用形成循环"))])
    if unfolded.size > MAX_SCHEMA_EXPANSION:
        return _Examined(
            [_("申请表定义展开引用后过于复杂（超过 %(n)s 个子定义）") % {"n": MAX_SCHEMA_EXPANSION}]
        )
    if unfolded.depth > MAX_SCHEMA_DEPTH:
        return _Examined(
            [_("申请表定义展开引用后嵌套过深（最多 %(n)s 层）") % {"n": MAX_SCHEMA_DEPTH}]
        )
    return _Examined([], regexes, tuple(falses), tuple(unchecked_formats))


@dataclass(frozen=True)
class _Unfolded:
    looping: Path | None  # a path on a loop, if following can loop
    size: int  # subschemas met from the root (capped past the bound)
    depth: int  # the longest chain of them


def _unfolded(applied: dict[Path, list[Path]]) -> _Unfolded:
    """What following subschemas and references from the root meets.
    Depth-first without recursion: reference chains can be long."""
    size: dict[Path, int] = {}
    depth: dict[Path, int] = {}
    on_stack: set[Path] = {()}
    stack: list[tuple[Path, Iterator[Path]]] = [((), iter(applied[()]))]
    while stack:
        path, children = stack[-1]
        for child in children:
            if child in on_stack:
                return _Unfolded(child, 0, 0)
            if child not in size:
                on_stack.add(child)
                stack.append((child, iter(applied[child])))
                break
        else:
            stack.pop()
            on_stack.discard(path)
            below = applied[path]
            size[path] = min(1 + sum(size[c] for c in below), MAX_SCHEMA_EXPANSION + 1)
            depth[path] = 1 + max((depth[c] for c in below), default=0)
    return _Unfolded(None, size[()], depth[()])


def schema_problems(schema: Any) -> list[str]:
    """Why ``schema`` cannot serve as an application form (empty: it can)."""
    examined = _examine(schema)
    return examined.problems or list(examined.unchecked_formats)


def stored_schema_findings(schema: Any) -> tuple[list[str], list[str]]:
    """For a schema already stored: why no form can be checked against it
    (the service takes no applications), and the formats in it that
    nothing checks (answers pass them unchecked)."""
    examined = _examine(schema)
    return examined.problems, list(examined.unchecked_formats)


# --- Checking forms ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    problems: tuple[str, ...]
    validator: Any
    regexes: dict[str, Any]


# Digests of the schemas that passed the meta-schema in this process. Its
# check is most of a schema's cost (about half a millisecond a subschema,
# a second at the bound): a validator the cache below dropped is made again
# without it. Cleared whole past its bound, as the memo it is.
_META_CHECKED: set[bytes] = set()
_META_CHECKED_MAX = 100_000


@functools.lru_cache(maxsize=256)
def _checked(canonical: str) -> _Checked:
    """A schema (as canonical JSON) checked once, its validator and regexes."""
    schema = json.loads(canonical)
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()
    examined = _examine(schema, meta_checked=digest in _META_CHECKED)
    if examined.problems:
        return _Checked(tuple(examined.problems), None, {})
    if len(_META_CHECKED) >= _META_CHECKED_MAX:
        _META_CHECKED.clear()
    _META_CHECKED.add(digest)
    # The dialect is always 2020-12; a $schema left in would make jsonschema
    # switch to its stock class (stdlib regexes) wherever "#" is followed.
    schema.pop("$schema", None)
    for path in examined.falses:
        # jsonschema makes the error of a false subschema without any
        # keyword, spelling out the whole instance, and anyOf or contains
        # may make thousands: as "not": {} the same error is paid for.
        *steps, last = path
        holder = schema
        for step in steps:
            holder = holder[step]
        holder[last] = {"not": {}}
    validator = _FormValidator(schema, format_checker=_FORMATS, registry=_REGISTRY)
    return _Checked((), validator, examined.regexes)


_MESSAGES = {
    "type": lambda e: _("类型不正确，应为 %(type)s") % {"type": e.validator_value},
    "enum": lambda e: _("取值不在允许的范围内"),
    "const": lambda e: _("取值不在允许的范围内"),
    "pattern": lambda e: _("格式不正确"),
    "format": lambda e: _("格式不正确（%(format)s）") % {"format": e.validator_value},
    "minLength": lambda e: _("至少 %(n)s 个字符") % {"n": e.validator_value},
    "maxLength": lambda e: _("最多 %(n)s 个字符") % {"n": e.validator_value},
    "minimum": lambda e: _("不能小于 %(n)s") % {"n": e.validator_value},
    "maximum": lambda e: _("不能大于 %(n)s") % {"n": e.validator_value},
    "exclusiveMinimum": lambda e: _("必须大于 %(n)s") % {"n": e.validator_value},
    "exclusiveMaximum": lambda e: _("必须小于 %(n)s") % {"n": e.validator_value},
    "minItems": lambda e: _("至少 %(n)s 项") % {"n": e.validator_value},
    "maxItems": lambda e: _("最多 %(n)s 项") % {"n": e.validator_value},
    "additionalProperties": lambda e: _("含有表单未定义的字段"),
}


def _key(error: ValidationError, *extra: str) -> str:
    return ".".join(["form", *(str(p) for p in error.absolute_path), *extra])


def form_errors(schema: dict[str, Any], form: Any) -> dict[str, list[str]]:
    """``{"form.<field>": [messages]}`` for every way ``form`` breaks ``schema``
    (the first :data:`MAX_FORM_ERRORS` errors found).

    Raises :class:`FormSchemaUnusable` if ``schema`` itself breaks the rules
    of :func:`schema_problems` (a schema stored before them).
    """
    checked = _checked(json.dumps(schema, ensure_ascii=False))
    if checked.validator is None:
        raise FormSchemaUnusable(list(checked.problems))
    if _deeper_than(form, MAX_FORM_DEPTH):
        return {"form": [_("申请表内容嵌套过深")]}
    size = _utf8_size(form)
    if size is None:
        return {"form": [_("申请表内容含有无效字符")]}
    if size > MAX_FORM_BYTES:
        return {"form": [_("申请表内容过大")]}
    token = _WORK.set(_Work(MAX_FORM_WORK, checked.regexes))
    try:
        found = list(itertools.islice(checked.validator.iter_errors(form), MAX_FORM_ERRORS))
    except _OutOfWork:
        return {"form": [_("申请表内容过于复杂，无法完成检查")]}
    except referencing.exceptions.Unresolvable as exc:
        # Only reachable if the rules above missed a reference: it resolved
        # nowhere, since the registry retrieves nothing.
        raise FormSchemaUnusable([str(exc)]) from exc
    finally:
        _WORK.reset(token)
    found.sort(key=lambda e: list(e.absolute_path))

    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        messages = errors.setdefault(key, [])
        if message not in messages:
            messages.append(message)

    for error in found:
        if error.validator == "required" and isinstance(error.instance, dict):
            # One error per missing name, each naming all required ones.
            for name in error.validator_value:
                if len(errors) == MAX_FORM_ERRORS:
                    break
                if name not in error.instance:
                    add(_key(error, name), _("此项为必填项"))
            continue
        describe = _MESSAGES.get(str(error.validator), lambda e: _("不符合要求"))
        add(_key(error), describe(error))
    return errors
