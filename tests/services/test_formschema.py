"""The rules a form schema follows, and how forms are checked against one."""

from __future__ import annotations

import pytest

from services.formschema import (
    DIALECT,
    MAX_FORM_BYTES,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_EXPANSION,
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
    "ref", ["#/$defs/missing", "#/properties/b", "#/properties/a/type/0", "#/$defs/x/0"]
)
def test_a_local_reference_that_leads_nowhere_is_refused(ref) -> None:
    schema = {**form_with(a={"$ref": ref}), "$defs": {"x": {"type": "string"}}}
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


def test_a_long_chain_of_references_is_followed_without_recursion() -> None:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(1500)}
    defs["d1500"] = {"type": "string"}
    assert schema_problems({**form_with(a={"$ref": "#/$defs/d0"}), "$defs": defs}) == []


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

    monkeypatch.setattr(formschema, "_structure_problems", lambda schema: [])
    formschema._checked.cache_clear()
    try:
        for ref in (schema_host.url(), "file:///etc/hostname"):
            with pytest.raises(FormSchemaUnusable):
                form_errors(form_with(a={"$ref": ref}), {"a": "x"})
    finally:
        formschema._checked.cache_clear()
    assert schema_host.requests == []
