"""How personal data is shown where it must not be whole: the API, the
admin, the logs. One rule per kind of value, used everywhere."""

from __future__ import annotations

import re


def mask_phone(phone: str | None) -> str:
    if not phone:
        return ""
    if len(phone) != 11:
        return "*" * len(phone)
    return f"{phone[:3]}****{phone[7:]}"


def mask_name(name: str | None) -> str:
    """``张三`` → ``张*``; ``欧阳娜娜`` → ``欧***``: the first character only."""
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1) if len(name) > 1 else "*"


def mask_id_number(id_number: str | None) -> str:
    """``430102199003071234`` → ``430102********1234``."""
    if not id_number:
        return ""
    if len(id_number) != 18:
        return "*" * len(id_number)
    return f"{id_number[:6]}********{id_number[14:]}"


def mask_email(email: str | None) -> str:
    """``zhangsan@example.com`` → ``z***@example.com``: the first character
    and the domain only."""
    if not email:
        return ""
    local, at, domain = email.rpartition("@")
    if not at or not local:
        return "*" * len(email)
    return f"{local[0]}***@{domain}"


# Mainland mobile numbers (with or without +86 / 0086) and resident ID
# numbers, not inside longer digit runs.
_PHONE = re.compile(
    r"(?<![\d+])(?P<prefix>(?:\+?86|0086)[ -]?)?(?P<digits>1[3-9]\d[ -]?\d{4}[ -]?\d{4})(?!\d)"
)
_ID_NUMBER = re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])")
# A person's name has no shape of its own; it is masked where a key says
# what it is: JSON and Python reprs ("name": "张三", 'real_name': '张三'),
# keyword arguments (real_name=张三) and database messages
# (Key (real_name)=(张三)). Han characters, optionally with the middle dot
# of minority and foreign names.
_NAME_KEYS = r"real_?name|full_?name|name|applicant_?name|payer_?name|姓名"
_NAME = re.compile(
    rf"""(?P<key>(?<![A-Za-z_])["']?\(?(?:{_NAME_KEYS})\)?["']?\s*[:=：]\s*\(?["']?)"""
    r"(?P<name>[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef]"
    r"[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef·•]{1,20})",
    re.IGNORECASE,
)


def mask_text(text: str) -> str:
    """``text`` with every phone, ID number and keyed personal name masked,
    each as the API and the admin show it."""
    text = _ID_NUMBER.sub(lambda m: mask_id_number(m[0]), text)
    text = _PHONE.sub(
        lambda m: (m["prefix"] or "") + mask_phone(m["digits"].replace(" ", "").replace("-", "")),
        text,
    )
    return _NAME.sub(lambda m: m["key"] + mask_name(m["name"]), text)


def mask_url_query(url: str) -> str:
    """``https://hr.example.cn/hook?token=abc&v=2`` →
    ``https://hr.example.cn/hook?token=***&v=***``: where a URL is shown to
    anyone but its owner (the admin, the audit trail, messages), a secret
    some systems carry in the query string is not. Scheme, host and path
    stay; so do the parameters' names when they are plain names (anything
    else, ``?s3cr3t`` or ``?a%3Db``, is masked whole)."""
    base, mark, query = url.partition("?")
    if not mark:
        return url
    shown = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        if not part:
            shown.append("")
        elif equals and _QUERY_NAME.fullmatch(name):
            shown.append(f"{name}=***")
        else:
            shown.append("***")
    return f"{base}?{'&'.join(shown)}"


_QUERY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,39}")
