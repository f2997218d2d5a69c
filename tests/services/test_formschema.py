"""The rules a form schema follows, and how forms are checked against one."""

from __future__ import annotations

import json

import pytest

from services.formschema import (
    DIALECT,
    MAX_FORM_BYTES,
    MAX_FORM_ERRORS,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_EXPANSION,
    MAX_SCHEMA_REGEX_PROGRAM,
    FormSchemaUnusable,
    form_errors,
    schema_problems,
)
from tests.services.factories import SIMPLE_FORM


def form_with(**properties) -> dict:
    return {"type": "object", "properties": properties}


def nested(levels: int, inner: dict) -> dict:
    for _ in range(levels):
        inner = {"not": {"not": inner}}
    return inner


GOOD = {
    "$schema": DIALECT,
    "type": "object",
    "$defs": {
        "phone": {"type": "string", "pattern": "^1[3-9]\\d{9}$"},
        "person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "phone": {"$ref": "#/$defs/phone"}},
        },
    },
    "properties": {
        "applicant": {"$ref": "#/$defs/person"},
        "family": {"type": "array", "items": {"$ref": "#/$defs/person"}, "maxItems": 10},
        "phone": {"allOf": [{"$ref": "#/$defs/phone"}, {"minLength": 11}]},
        "tag": {"type": "string", "format": "regex"},
    },
    "patternProperties": {"^x-[a-z]+$": {"type": "string"}},
    "additionalProperties": False,
}


def test_a_form_with_local_references_and_re2_patterns_is_accepted() -> None:
    assert schema_problems(GOOD) == []
    assert schema_problems(SIMPLE_FORM) == []


@pytest.mark.parametrize(
    "ref",
    [
        "http://127.0.0.1:9/schema.json",
        "https://json-schema.org/draft/2020-12/schema",  # even one jsonschema ships
        "file:///etc/passwd",
        "urn:example:form",
        "other.json#/$defs/x",
        "//evil.example/x",
        "#anchor",
    ],
)
def test_a_reference_outside_the_schema_is_refused(ref) -> None:
    problems = schema_problems(form_with(a={"$ref": ref}))
    assert len(problems) == 1 and "properties/a/$ref" in problems[0] and ref in problems[0]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("$id", "http://127.0.0.1:9/"),
        ("$id", "urn:uuid:d6a4a3f0-0000-0000-0000-000000000000"),
        ("$anchor", "here"),
        ("$dynamicAnchor", "meta"),
        ("$dynamicRef", "#meta"),
        ("unevaluatedProperties", False),
        ("unevaluatedItems", False),
    ],
)
def test_keywords_that_move_or_slow_references_are_refused_anywhere(keyword, value) -> None:
    assert schema_problems({"type": "object", keyword: value})
    assert keyword in schema_problems(form_with(a={keyword: value}))[0]


def test_a_remote_base_cannot_turn_a_local_reference_remote() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$id": "http://127.0.0.1:9/base/", "$ref": "#/$defs/x"}},
    }
    assert "$id" in schema_problems(schema)[0]


def test_schema_may_only_name_draft_2020_12_at_the_top() -> None:
    assert schema_problems({**GOOD, "$schema": DIALECT + "#"}) == []
    assert schema_problems({**GOOD, "$schema": "http://json-schema.org/draft-07/schema#"})
    # A subschema naming a dialect would be validated by jsonschema's stock
    # class for it, with stdlib regexes.
    assert schema_problems(form_with(a={"$schema": DIALECT, "pattern": "^(a+)+$"}))


@pytest.mark.parametrize(
    "ref",
    [
        "#/$defs/missing",
        "#/properties/b",
        "#/properties/a/type/0",
        "#/$defs/x/0",
        # Through a string or a list by name, into a number, a boolean or null.
        "#/type/x",
        "#/$defs/x/enum/x",
        "#/$defs/x/minLength/x",
        "#/$defs/yes/x",
        "#/$defs/x/const/x",
    ],
)
def test_a_local_reference_that_leads_nowhere_is_refused(ref) -> None:
    schema = {
        **form_with(a={"$ref": ref}),
        "$defs": {
            "x": {"type": "string", "minLength": 1, "enum": ["a"], "const": None},
            "yes": True,
        },
    }
    assert "指向不存在的位置" in schema_problems(schema)[0]


def test_a_reference_into_data_that_is_not_a_subschema_is_refused() -> None:
    # jsonschema would take whatever "x-payload" holds as a schema, unchecked.
    schema = {
        **form_with(a={"$ref": "#/x-payload"}),
        "x-payload": {"$ref": "http://127.0.0.1:9/x"},
    }
    assert "指向的不是表单定义" in schema_problems(schema)[0]
    schema = {**form_with(a={"$ref": "#/properties/b/enum/0"}), "properties": {}}
    schema["properties"] = {"a": {"$ref": "#/properties/b/enum/0"}, "b": {"enum": [{}]}}
    assert "指向的不是表单定义" in schema_problems(schema)[0]


@pytest.mark.parametrize(
    "schema",
    [
        form_with(a={"$ref": "#"}),
        {**form_with(a={"$ref": "#/$defs/a"}), "$defs": {"a": {"$ref": "#/$defs/a"}}},
        {
            **form_with(a={"$ref": "#/$defs/a"}),
            "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}},
        },
        # Recursion through the value's parts (a tree) loops too: forms are flat.
        {
            **form_with(child={"$ref": "#/$defs/node"}),
            "$defs": {"node": {"items": {"$ref": "#/$defs/node"}}},
        },
    ],
)
def test_references_that_loop_are_refused(schema) -> None:
    assert "循环" in schema_problems(schema)[0]


def chain(links: int) -> dict:
    """A form whose field "a" is a string after ``links`` references."""
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(links)}
    defs[f"d{links}"] = {"type": "string"}
    return {**form_with(a={"$ref": "#/$defs/d0"}), "$defs": defs}


def test_a_chain_of_references_is_bounded_since_validation_follows_it_recursively() -> None:
    # The form, "a" and the string end make three levels.
    assert schema_problems(chain(MAX_SCHEMA_DEPTH - 3)) == []
    assert form_errors(chain(MAX_SCHEMA_DEPTH - 3), {"a": 1}) == {
        "form.a": ["类型不正确，应为 string"]
    }
    refused = [f"申请表定义展开引用后嵌套过深（最多 {MAX_SCHEMA_DEPTH} 层）"]
    assert schema_problems(chain(MAX_SCHEMA_DEPTH - 2)) == refused
    # Checked without recursion; jsonschema would need thousands of frames.
    assert schema_problems(chain(1500)) == refused
    with pytest.raises(FormSchemaUnusable):
        form_errors(chain(1500), {"a": 1})


def test_references_that_unfold_past_the_bound_are_refused() -> None:
    # 2**20 subschemas from 21 small definitions ("billion laughs").
    defs = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(20)
    }
    defs["d20"] = {"type": "string"}
    problems = schema_problems({**form_with(a={"$ref": "#/$defs/d0"}), "$defs": defs})
    assert problems == [f"申请表定义展开引用后过于复杂（超过 {MAX_SCHEMA_EXPANSION} 个子定义）"]


def test_a_schema_nested_too_deep_is_refused_before_jsonschema_recurses() -> None:
    # The form, its properties and "a" make three levels; each nested() two more.
    levels = (MAX_SCHEMA_DEPTH - 3) // 2
    assert schema_problems(form_with(a=nested(levels, {}))) == []
    assert "嵌套过深" in schema_problems(form_with(a=nested(levels + 1, {})))[0]
    assert "嵌套过深" in schema_problems(form_with(a=nested(500, {})))[0]


@pytest.mark.parametrize(
    "pattern",
    ["(a)\\1", "(?=a)b", "(?!a)b", "(?<=a)b", "(?<!a)b", "a{1001}"],
)
def test_patterns_re2_cannot_run_are_refused(pattern) -> None:
    problems = schema_problems(form_with(a={"type": "string", "pattern": pattern}))
    assert problems and "properties/a/pattern" in problems[0] and "正则表达式" in problems[0]
    problems = schema_problems({"type": "object", "patternProperties": {pattern: {}}})
    assert problems and "patternProperties" in problems[0]


def test_patterns_search_like_json_schema_says() -> None:
    schema = form_with(code={"type": "string", "pattern": "[0-9]{3}"})
    assert form_errors(schema, {"code": "ab123cd"}) == {}
    assert form_errors(schema, {"code": "ab12cd"}) == {"form.code": ["格式不正确"]}
    # "$" is the end of the text, as in ECMA-262 (Python's re would also
    # match before a final newline).
    schema = form_with(phone={"type": "string", "pattern": "^1[3-9]\\d{9}$"})
    assert form_errors(schema, {"phone": "13800138000\n"}) == {"form.phone": ["格式不正确"]}


@pytest.mark.timeout(10)
def test_a_catastrophic_pattern_runs_in_linear_time() -> None:
    # A backtracking engine needs about 2**5000 steps for each of these.
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}},
        "patternProperties": {"^(b+)+$": {"type": "integer"}},
        "propertyNames": {"pattern": "^(c|b+|a)+$|^(x+x+)+y$"},
        "additionalProperties": False,
    }
    assert schema_problems(schema) == []
    form = {"a": "a" * 5000 + "!", "b" * 5000 + "!": 1, "x" * 5000: 1}
    errors = form_errors(schema, form)
    assert errors["form.a"] == ["格式不正确"]
    # Names: "b…!" and "x…" are neither declared nor allowed by propertyNames.
    assert sorted(errors["form"]) == sorted(["含有表单未定义的字段", "格式不正确"])
    assert form_errors(schema, {"a": "a" * 5000, "b" * 5000: "not a number"}) == {
        "form." + "b" * 5000: ["类型不正确，应为 integer"]
    }


@pytest.mark.timeout(10)
def test_unique_items_takes_linear_time_with_json_equality() -> None:
    schema = form_with(a={"type": "array", "uniqueItems": True})
    # jsonschema's pairwise comparison took minutes over this many objects.
    many = [{"k": i} for i in range(3000)]
    assert form_errors(schema, {"a": many}) == {}
    assert form_errors(schema, {"a": [*many, {"k": 5.0}]}) == {"form.a": ["不符合要求"]}
    pair = [{"k": 5, "v": [5, {"x": 5}]}, {"v": [5, {"x": 5.0}], "k": 5}]
    assert form_errors(schema, {"a": pair}) == {"form.a": ["不符合要求"]}
    assert form_errors(schema, {"a": [1, 1.0]}) == {"form.a": ["不符合要求"]}
    assert form_errors(schema, {"a": [1, True, 0, False, "1", None, [1], {"1": 1}]}) == {}


def test_format_regex_is_checked_with_re2() -> None:
    schema = form_with(rule={"type": "string", "format": "regex"})
    assert form_errors(schema, {"rule": "^[a-z]+$"}) == {}
    assert form_errors(schema, {"rule": "(?=a)"}) == {"form.rule": ["格式不正确（regex）"]}


def test_a_form_too_large_or_too_deep_is_refused_whole() -> None:
    schema = {"type": "object"}
    assert form_errors(schema, {"text": "字" * (MAX_FORM_BYTES // 3)}) == {
        "form": ["申请表内容过大"]
    }
    deep: object = 1
    for _ in range(100):
        deep = [deep]
    assert form_errors(schema, {"x": deep}) == {"form": ["申请表内容嵌套过深"]}


@pytest.mark.parametrize(
    "schema",
    [
        form_with(a={"$ref": "http://127.0.0.1:9/x"}),
        form_with(a={"$ref": "#/$defs/missing"}),
        form_with(a={"$ref": "#"}),
        form_with(a={"type": "string", "pattern": "(a)\\1"}),
    ],
)
def test_checking_a_form_against_a_schema_that_breaks_the_rules_raises(schema) -> None:
    with pytest.raises(FormSchemaUnusable) as caught:
        form_errors(schema, {"a": "x"})
    assert caught.value.problems == schema_problems(schema)


def test_the_validator_itself_never_retrieves(monkeypatch, schema_host) -> None:
    """Second line of defence: a remote reference the rules let through
    resolves nowhere, and nothing is fetched."""
    from services import formschema

    monkeypatch.setattr(
        formschema, "_structure_problems", lambda schema, **kwargs: formschema._Examined([])
    )
    formschema._checked.cache_clear()
    try:
        for ref in (schema_host.url(), "file:///etc/hostname"):
            with pytest.raises(FormSchemaUnusable):
                form_errors(form_with(a={"$ref": ref}), {"a": "x"})
    finally:
        formschema._checked.cache_clear()
    assert schema_host.requests == []


def test_subschemas_are_counted_before_the_meta_schema_checks_each() -> None:
    # The meta-schema takes about half a millisecond a subschema; these
    # 64 KB would have taken seconds before being refused.
    problem = f"申请表定义过于复杂（超过 {MAX_SCHEMA_EXPANSION} 个子定义）"
    assert schema_problems({"type": "object", "anyOf": [{}] * 16_000}) == [problem]
    assert schema_problems({"type": "object", "$defs": {f"d{i}": True for i in range(2001)}}) == [
        problem
    ]


# --- Regular expressions are RE2's, never Python's ---------------------------------------


def test_patterns_are_rules_of_re2_not_of_python() -> None:
    # Python's re cannot read \p{Han}; its parser recurses once per group.
    han = "^\\p{Han}+$"
    groups = "(" * 1000 + "a" + ")" * 1000
    schema = {
        **form_with(
            name={"type": "string", "pattern": han}, g={"type": "string", "pattern": groups}
        ),
        "patternProperties": {"^\\p{Han}": {"type": "integer"}},
    }
    assert schema_problems(schema) == []
    assert form_errors(schema, {"name": "张三", "g": "a", "年龄": 30}) == {}
    assert form_errors(schema, {"name": "zhang", "g": "b", "年龄": "三十"}) == {
        "form.name": ["格式不正确"],
        "form.g": ["格式不正确"],
        "form.年龄": ["类型不正确，应为 integer"],
    }


def test_patterns_that_compile_too_large_are_refused() -> None:
    problems = schema_problems(form_with(a={"type": "string", "pattern": "\\pL{1000}"}))
    assert len(problems) == 1 and "properties/a/pattern" in problems[0]
    assert "pattern too large" in problems[0]
    # Each fine alone, too much together (compiling and scanning both cost).
    names = {
        f"n{i}": {"type": "string", "pattern": f"^[\\p{{Han}}·]{{2,{20 + i}}}$"} for i in range(12)
    }
    assert schema_problems(form_with(**dict(list(names.items())[:4]))) == []
    problems = schema_problems(form_with(**names))
    assert len(problems) == 1 and f"超过 {MAX_SCHEMA_REGEX_PROGRAM} 条指令" in problems[0]


# --- Values UTF-8 cannot carry -----------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        form_with(a={"const": "\ud800"}),
        form_with(**{"a\udfff": {"type": "string"}}),
        form_with(a={"type": "string", "pattern": "\ud800"}),
    ],
)
def test_a_schema_holding_a_lone_surrogate_is_refused(schema) -> None:
    assert schema_problems(schema) == ["申请表定义含有无效字符（不成对的代理码元）"]


def test_a_form_holding_a_lone_surrogate_is_refused_whole() -> None:
    for form in ({"reason": "\ud800" * 2, "phone": "13800138000"}, {"\udc00": 1}):
        assert form_errors(SIMPLE_FORM, form) == {"form": ["申请表内容含有无效字符"]}


# --- Checking a form is bounded work, whatever the schema ---------------------------------

TOO_COMPLEX = {"form": ["申请表内容过于复杂，无法完成检查"]}


def array_of(item_schema: dict) -> dict:
    return form_with(a={"type": "array", "items": item_schema})


def fill(make) -> dict:
    """The largest form ``make(n)`` that fits MAX_FORM_BYTES."""
    low, high = 1, MAX_FORM_BYTES
    while low < high:
        middle = (low + high + 1) // 2
        if len(json.dumps(make(middle), ensure_ascii=False).encode()) <= MAX_FORM_BYTES:
            low = middle
        else:
            high = middle - 1
    return make(low)


# Each took from seconds to minutes before (and millions of error objects).
WIDE = {
    # The review's: 24 KB of schema, 6 KB of form, 162 s.
    "anyOf of consts per item": (
        array_of({"anyOf": [{"const": i} for i in range(1, 1500)]}),
        lambda n: {"a": [0] * n},
    ),
    "false branches per item": (array_of({"anyOf": [False] * 1900}), lambda n: {"a": [0] * n}),
    "contains per branch": (
        {
            "type": "object",
            "allOf": [{"properties": {"a": {"contains": {"type": "string"}}}}] * 600,
        },
        lambda n: {"a": [0] * n},
    ),
    "uniqueItems per branch": (
        {
            "type": "object",
            "anyOf": [{"properties": {"a": {"uniqueItems": True, "type": "string"}}}] * 600,
        },
        lambda n: {"a": [[i] for i in range(n)]},
    ),
    "patterns per name": (
        {
            "type": "object",
            "patternProperties": {f"^q{i}$": {} for i in range(400)},
            "additionalProperties": False,
        },
        lambda n: {f"n{i}": 0 for i in range(n)},
    ),
    "a pattern RE2 scans slowly": (
        form_with(a={"type": "string", "pattern": "\\w{1000}!"}),
        lambda n: {"a": "ab" * n},
    ),
    "regexes to compile": (array_of({"format": "regex"}), lambda n: {"a": ["\\pL{1000}"] * n}),
    "keys that are not keywords": (
        array_of({"anyOf": [{f"x-{i}": 0 for i in range(300)}] * 10}),
        lambda n: {"a": [0] * n},
    ),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", WIDE)
def test_a_form_that_costs_too_much_to_check_is_refused_whole(name) -> None:
    schema, make = WIDE[name]
    assert schema_problems(schema) == []
    assert form_errors(schema, fill(make)) == TOO_COMPLEX


def test_ordinary_forms_are_well_within_the_budget() -> None:
    family = [{"name": "李四", "phone": "13900139000"}] * 10
    assert form_errors(GOOD, {"applicant": {"name": "张三"}, "family": family}) == {}
    schema = {
        "type": "object",
        "properties": {
            **{f"f{i}": {"type": "string", "maxLength": 200, "pattern": "\\S"} for i in range(100)},
            "family": {
                "type": "array",
                "maxItems": 20,
                "items": {
                    "type": "object",
                    "properties": {f"g{j}": {"type": "string", "minLength": 1} for j in range(10)},
                },
            },
        },
        "additionalProperties": False,
    }
    form = {
        **{f"f{i}": "张三丰" for i in range(100)},
        "family": [{f"g{j}": "值" for j in range(10)}] * 20,
    }
    assert form_errors(schema, form) == {}
    assert (
        form_errors(form_with(t={"type": "string", "pattern": "\\S"}), {"t": "字" * 20_000}) == {}
    )


def test_errors_collected_from_one_form_are_bounded() -> None:
    schema = array_of({"type": "string"})
    errors = form_errors(schema, {"a": [0] * 1000})
    assert len(errors) == MAX_FORM_ERRORS
    assert errors["form.a.0"] == ["类型不正确，应为 string"]
    schema = array_of({"required": [f"r{i}" for i in range(5000)]})
    assert len(form_errors(schema, {"a": [{}] * 100})) == MAX_FORM_ERRORS


def test_false_subschemas_still_refuse_everything() -> None:
    schema = {
        **form_with(
            no=False,
            any={"anyOf": [False, {"type": "integer"}]},
            notany={"not": {"anyOf": [False]}},
            has={"contains": False},
            list={"prefixItems": [False]},
        ),
        "additionalProperties": False,
    }
    form = {"no": 1, "any": "x", "notany": 1, "has": [1], "list": [1], "extra": 1}
    assert form_errors(schema, form) == {
        "form": ["含有表单未定义的字段"],
        "form.any": ["不符合要求"],
        "form.has": ["不符合要求"],
        "form.list.0": ["不符合要求"],
        "form.no": ["不符合要求"],
    }
    assert form_errors(schema, {"any": 1, "notany": 1, "has": [], "list": []}) == {
        "form.has": ["不符合要求"]
    }


def test_multiples_of_integers_too_large_for_a_float_are_exact() -> None:
    schema = form_with(half={"multipleOf": 0.5}, third={"multipleOf": 0.3}, three={"multipleOf": 3})
    assert form_errors(schema, {"half": 10**400, "three": 3 * 10**400}) == {}
    assert form_errors(schema, {"third": 10**400, "three": 10**400 + 1}) == {
        "form.third": ["不符合要求"],
        "form.three": ["不符合要求"],
    }


# --- Formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format_", "good", "bad"),
    [
        ("date", "2026-12-07", "2026-13-07"),
        ("time", "09:30:00", "9点半"),
        ("date-time", "2026-12-07T09:30:00+08:00", "下周某天"),
        ("email", "zhang.san@example.cn", "not an address"),
        ("hostname", "gov.changsha.cn", "-bad-.example"),
        ("uri", "https://www.changsha.gov.cn/a?b=c", "not a uri at all"),
        ("uri-reference", "/a/b?c", "\\\\bad path"),
        ("ipv4", "192.0.2.1", "192.0.2"),
        ("uuid", "4f6bd0a4-4b3e-4c5d-9a1e-9d2f5e6a7b8c", "4f6bd0a4"),
    ],
)
def test_every_format_a_schema_may_name_is_checked(format_, good, bad) -> None:
    schema = form_with(x={"type": "string", "format": format_})
    assert schema_problems(schema) == []
    assert form_errors(schema, {"x": good}) == {}
    assert form_errors(schema, {"x": bad}) == {"form.x": [f"格式不正确（{format_}）"]}


@pytest.mark.parametrize("format_", ["duration", "iri", "json-pointer", "no-such-format"])
def test_a_format_nothing_here_checks_is_refused_when_the_schema_is_saved(format_) -> None:
    # A format nothing checks would pass any answer as "checked".
    schema = form_with(a={"type": "object", "properties": {"x": {"format": format_}}})
    (problem,) = schema_problems(schema)
    assert problem.startswith("位置 properties/a/properties/x/format：")
    assert format_ in problem


def test_a_stored_schema_naming_a_format_nothing_checks_still_takes_forms() -> None:
    # Stored before the rule: the format stays an annotation, as JSON Schema
    # has it, rather than the service refusing every application.
    schema = form_with(x={"type": "string", "format": "no-such-format"})
    assert form_errors(schema, {"x": "anything"}) == {}


def test_the_meta_schema_check_is_not_paid_again_when_a_validator_is_evicted(
    monkeypatch,
) -> None:
    # It costs about half a millisecond a subschema: a schema at the bound
    # costs about a second, which a process dropping and remaking validators
    # would pay on every remake.
    from services import formschema

    calls = []
    real = formschema.Draft202012Validator.check_schema

    def counted(schema, *args, **kwargs):
        calls.append(1)
        return real(schema, *args, **kwargs)

    monkeypatch.setattr(formschema.Draft202012Validator, "check_schema", counted)
    schema = form_with(**{f"f{i}": {"allOf": [{"not": {}}, True]} for i in range(50)})
    formschema._checked.cache_clear()
    assert form_errors(schema, {"f1": "ab"}) == {"form.f1": ["不符合要求"]}
    formschema._checked.cache_clear()  # evicted
    assert form_errors(schema, {"f1": "ab"}) == {"form.f1": ["不符合要求"]}
    assert len(calls) == 1
    # Another schema is checked in full.
    assert schema_problems(form_with(a={"minLength": "x"}))
    assert len(calls) == 2


def test_the_formats_checked_are_the_documented_ones_whatever_else_is_installed() -> None:
    from pathlib import Path

    from services import formschema

    assert set(formschema._FORMATS.checkers) == {*formschema.FORMATS, "regex"}
    root = Path(__file__).resolve().parents[2]
    for doc in ("README.md", "docs/departments.md"):
        text = (root / doc).read_text()
        assert all(f"`{name}`" in text for name in (*formschema.FORMATS, "regex")), doc
