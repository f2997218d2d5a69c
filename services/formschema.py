"""Application forms as JSON Schema: checking schemas, checking forms.

Departments describe their form as a JSON Schema (draft 2020-12) object;
citizens' answers are checked against it, and every problem is reported per
field in the citizen's language (``form.<field>`` → messages).
"""

from __future__ import annotations

import json
from typing import Any

from django.utils.translation import gettext as _
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError

MAX_SCHEMA_BYTES = 64 * 1024


def schema_problems(schema: Any) -> list[str]:
    """Why ``schema`` cannot serve as an application form (empty: it can)."""
    if not isinstance(schema, dict):
        return [_("申请表定义必须是 JSON 对象")]
    if len(json.dumps(schema, ensure_ascii=False).encode()) > MAX_SCHEMA_BYTES:
        return [_("申请表定义过大")]
    if schema.get("type") != "object":
        return [_('申请表定义的顶层必须是 "type": "object"')]
    if not isinstance(schema.get("properties", {}), dict):
        return [_("properties 必须是对象")]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        location = "/".join(str(p) for p in exc.absolute_path) or "/"
        return [
            _("位置 %(location)s：%(message)s") % {"location": location, "message": exc.message}
        ]
    return []


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
    """``{"form.<field>": [messages]}`` for every way ``form`` breaks ``schema``."""
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    errors: dict[str, list[str]] = {}

    def add(key: str, message: str) -> None:
        messages = errors.setdefault(key, [])
        if message not in messages:
            messages.append(message)

    for error in sorted(validator.iter_errors(form), key=lambda e: list(e.absolute_path)):
        if error.validator == "required" and isinstance(error.instance, dict):
            # One error per missing name, each naming all required ones.
            for name in error.validator_value:
                if name not in error.instance:
                    add(_key(error, name), _("此项为必填项"))
            continue
        describe = _MESSAGES.get(str(error.validator), lambda e: _("不符合要求"))
        add(_key(error), describe(error))
    return errors
