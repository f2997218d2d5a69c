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
- no form keeps a worker busy: regular expressions (``pattern``,
  ``patternProperties``, ``format: regex``) run on RE2, which takes time
  linear in the input and refuses what needs backtracking (backreferences,
  lookarounds); ``uniqueItems`` hashes instead of comparing every pair;
  references may not loop, and following them may not unfold the schema
  past :data:`MAX_SCHEMA_EXPANSION` subschemas; forms themselves are bounded
  in size and depth.

:func:`schema_problems` is the one rule, used where schemas are saved and
again before a stored schema checks a form.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2
import referencing
import referencing.exceptions
import referencing.jsonschema
from django.utils.translation import gettext as _
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError

MAX_SCHEMA_BYTES = 64 * 1024
# Nesting of the schema document (objects and arrays); jsonschema's own
# checks recurse, and a few hundred levels would exhaust the stack.
MAX_SCHEMA_DEPTH = 32
# Subschemas one form may meet once every reference is followed: a handful
# of $defs that reference each other twice over would otherwise unfold to
# millions ("billion laughs").
MAX_SCHEMA_EXPANSION = 2_000
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_DEPTH = 16

DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Where draft 2020-12 keeps subschemas (as the referencing library reads them).
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
_SCHEMAS_IN_MAP = ("$defs", "definitions", "dependentSchemas", "patternProperties", "properties")
# Those that hold subschemas only for references: not applied where they stand.
_STORES = frozenset({"$defs", "definitions", "contentSchema"})

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


# --- Regular expressions -------------------------------------------------------------------

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> Any:
    """``pattern`` compiled by RE2 (``re2.error`` if RE2 cannot run it)."""
    return re2.compile(pattern, _RE2_OPTIONS)


def _regex_problem(pattern: str) -> str | None:
    try:
        _regex(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return _(
            "正则表达式 %(pattern)s 无法使用（%(reason)s）；不支持反向引用、环视等需要回溯的写法"
        ) % {
            "pattern": pattern,
            "reason": reason,
        }
    return None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    # JSON Schema patterns are not anchored: search, not fullmatch.
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError("does not match the pattern")


def _pattern_properties(
    validator: Any, pattern_properties: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        regex = _regex(pattern)
        for name, value in instance.items():
            if regex.search(name):
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
        if name not in properties and not any(r.search(name) for r in patterns)
    ]
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif additional is False and extras:
        yield ValidationError(f"unexpected properties: {', '.join(map(repr, extras))}")


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


def _unique_items(
    validator: Any, unique: bool, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema compares objects pairwise: a thousand of them took seconds.
    if not (unique and validator.is_type(instance, "array")):
        return
    seen: set[str] = set()
    for item in instance:
        key = json.dumps(_canonical(item), sort_keys=True)
        if key in seen:
            yield ValidationError("has non-unique elements")
            return
        seen.add(key)


_FORMATS = FormatChecker()


@_FORMATS.checks("regex", raises=re2.error)
def _is_regex(instance: object) -> bool:
    if isinstance(instance, str):
        re2.compile(instance, _RE2_OPTIONS)
    return True


_FormValidator = validators.extend(
    Draft202012Validator,
    {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
        "uniqueItems": _unique_items,
    },
)


def _never_retrieve(uri: str) -> referencing.Resource[Any]:
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # an attrs class behind an alias mypy does not know


# Resolves references inside the schema itself and nowhere else.
_REGISTRY: referencing.Registry[Any] = referencing.Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]  # an attrs class behind an alias mypy does not know


# --- Checking schemas ----------------------------------------------------------------------


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects and arrays nest more than ``limit`` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _location(path: Path) -> str:
    return "/".join(str(p) for p in path) or "/"


def _at(path: Path, message: str) -> str:
    return _("位置 %(location)s：%(message)s") % {"location": _location(path), "message": message}


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[str, Path, Any]]:
    """``(keyword, relative path, subschema)`` for every subschema ``schema`` holds."""
    for keyword in _SCHEMA_IN_VALUE:
        if keyword in schema:
            yield keyword, (keyword,), schema[keyword]
    for keyword in _SCHEMAS_IN_LIST:
        for index, each in enumerate(schema.get(keyword, ())):
            yield keyword, (keyword, index), each
    for keyword in _SCHEMAS_IN_MAP:
        for name, each in schema.get(keyword, {}).items():
            yield keyword, (keyword, name), each


def _structure_problems(schema: dict[str, Any]) -> list[str]:
    """References, keywords and regexes of a schema the meta-schema accepts."""
    problems: list[str] = []
    nodes: dict[Path, Any] = {}
    applied: dict[Path, list[Path]] = {}
    refs: dict[Path, str] = {}
    pending: list[Path] = [()]
    nodes[()] = schema
    while pending:
        path = pending.pop()
        node = nodes[path]
        applied[path] = []
        if not isinstance(node, dict):  # true / false
            continue
        for keyword in _REFUSED_KEYWORDS:
            if keyword in node:
                problems.append(_at(path, _("不支持 %(keyword)s") % {"keyword": keyword}))
        if "$schema" in node and (path or node["$schema"].rstrip("#") != DIALECT):
            problems.append(
                _at(path, _("$schema 只能在顶层声明为 %(dialect)s") % {"dialect": DIALECT})
            )
        if "pattern" in node:
            problem = _regex_problem(node["pattern"])
            if problem:
                problems.append(_at((*path, "pattern"), problem))
        for pattern in node.get("patternProperties", {}):
            problem = _regex_problem(pattern)
            if problem:
                problems.append(_at((*path, "patternProperties"), problem))
        if "$ref" in node:
            refs[path] = node["$ref"]
        for keyword, relative, child in _subschemas(node):
            child_path = (*path, *relative)
            nodes[child_path] = child
            pending.append(child_path)
            if keyword not in _STORES:
                applied[path].append(child_path)
    if problems:
        return problems

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
        except referencing.exceptions.Unresolvable:
            problems.append(_at(at, _("引用 %(ref)s 指向不存在的位置") % {"ref": ref}))
            continue
        if id(target) not in where:
            problems.append(_at(at, _("引用 %(ref)s 指向的不是表单定义") % {"ref": ref}))
            continue
        applied[path].append(where[id(target)])
    if problems:
        return problems

    looping, size = _unfolded_size(applied)
    if looping is not None:
        return [_at(looping, _("引用形成循环"))]
    if size > MAX_SCHEMA_EXPANSION:
        return [
            _("申请表定义展开引用后过于复杂（超过 %(n)s 个子定义）") % {"n": MAX_SCHEMA_EXPANSION}
        ]
    return []


def _unfolded_size(applied: dict[Path, list[Path]]) -> tuple[Path | None, int]:
    """``(a path on a loop, 0)`` if following subschemas and references from
    the root can loop; else ``(None, the number of subschemas met)``.
    Depth-first without recursion: reference chains can be long."""
    size: dict[Path, int] = {}
    on_stack: set[Path] = {()}
    stack: list[tuple[Path, Iterator[Path]]] = [((), iter(applied[()]))]
    while stack:
        path, children = stack[-1]
        for child in children:
            if child in on_stack:
                return child, 0
            if child not in size:
                on_stack.add(child)
                stack.append((child, iter(applied[child])))
                break
        else:
            stack.pop()
            on_stack.discard(path)
            total = 1 + sum(size[child] for child in applied[path])
            size[path] = min(total, MAX_SCHEMA_EXPANSION + 1)
    return None, size[()]


def schema_problems(schema: Any) -> list[str]:
    """Why ``schema`` cannot serve as an application form (empty: it can)."""
    if not isinstance(schema, dict):
        return [_("申请表定义必须是 JSON 对象")]
    if _deeper_than(schema, MAX_SCHEMA_DEPTH):
        return [_("申请表定义嵌套过深（最多 %(n)s 层）") % {"n": MAX_SCHEMA_DEPTH}]
    if len(json.dumps(schema, ensure_ascii=False).encode()) > MAX_SCHEMA_BYTES:
        return [_("申请表定义过大")]
    if schema.get("type") != "object":
        return [_('申请表定义的顶层必须是 "type": "object"')]
    if not isinstance(schema.get("properties", {}), dict):
        return [_("properties 必须是对象")]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return [_at(tuple(exc.absolute_path), exc.message)]
    return _structure_problems(schema)


# --- Checking forms ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Checked:
    problems: tuple[str, ...]
    validator: Any


@functools.lru_cache(maxsize=256)
def _checked(canonical: str) -> _Checked:
    """A schema (as canonical JSON) checked once, and its validator."""
    schema = json.loads(canonical)
    problems = schema_problems(schema)
    if problems:
        return _Checked(tuple(problems), None)
    # The dialect is always 2020-12; a $schema left in would make jsonschema
    # switch to its stock class (stdlib regexes) wherever "#" is followed.
    schema.pop("$schema", None)
    return _Checked((), _FormValidator(schema, format_checker=_FORMATS, registry=_REGISTRY))


def _validator(schema: Any) -> Any:
    checked = _checked(json.dumps(schema, ensure_ascii=False))
    if checked.validator is None:
        raise FormSchemaUnusable(list(checked.problems))
    return checked.validator


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
    """``{"form.<field>": [messages]}`` for every way ``form`` breaks ``schema``.

    Raises :class:`FormSchemaUnusable` if ``schema`` itself breaks the rules
    of :func:`schema_problems` (a schema stored before them).
    """
    validator = _validator(schema)
    if _deeper_than(form, MAX_FORM_DEPTH):
        return {"form": [_("申请表内容嵌套过深")]}
    if len(json.dumps(form, ensure_ascii=False).encode()) > MAX_FORM_BYTES:
        return {"form": [_("申请表内容过大")]}
    try:
        found = sorted(validator.iter_errors(form), key=lambda e: list(e.absolute_path))
    except referencing.exceptions.Unresolvable as exc:
        # Only reachable if the rules above missed a reference: it resolved
        # nowhere, since the registry retrieves nothing.
        raise FormSchemaUnusable([str(exc)]) from exc

    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        messages = errors.setdefault(key, [])
        if message not in messages:
            messages.append(message)

    for error in found:
        if error.validator == "required" and isinstance(error.instance, dict):
            # One error per missing name, each naming all required ones.
            for name in error.validator_value:
                if name not in error.instance:
                    add(_key(error, name), _("此项为必填项"))
            continue
        describe = _MESSAGES.get(str(error.validator), lambda e: _("不符合要求"))
        add(_key(error), describe(error))
    return errors
