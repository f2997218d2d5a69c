"""Resident identity card numbers (GB 11643-1999): checksum and birth date."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

from django.utils.translation import gettext_lazy as _

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"
# Province-level codes in use: the mainland, plus Taiwan, Hong Kong, Macao
# (71, 81, 82) and 83 (residence permits for Taiwan residents).
PROVINCES = frozenset(
    {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46}
    | {50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83}
)
# ASCII digits only (Python's \d takes any script's, and int() reads them):
# each spelling of one number would have its own blind index, and the
# number could be bound to a second account.
_SHAPE = re.compile(r"^[0-9]{17}[0-9X]$")


class IdNumberError(ValueError):
    """The number is not a valid ID number; the message says why."""


def normalize(raw: str) -> str:
    """Without spaces, in capitals, full-width characters (４３０…Ｘ) as ASCII."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", raw or "")).upper()


def check_char(first17: str) -> str:
    """The 18th character for the first 17 digits (ISO 7064 MOD 11-2)."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def birth_date(id_number: str) -> dt.date:
    return dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def validate(raw: str, *, today: dt.date | None = None) -> str:
    """The normalised number, or :class:`IdNumberError` saying what is wrong."""
    number = normalize(raw)
    if not _SHAPE.match(number):
        raise IdNumberError(_("身份证号应为 17 位数字加 1 位数字或 X"))
    if int(number[:2]) not in PROVINCES:
        raise IdNumberError(_("身份证号的地区码无效"))
    if check_char(number[:17]) != number[17]:
        raise IdNumberError(_("身份证号校验位不正确"))
    try:
        born = birth_date(number)
    except ValueError as exc:
        raise IdNumberError(_("身份证号中的出生日期无效")) from exc
    today = today or dt.date.today()
    if born > today or born.year < 1900:
        raise IdNumberError(_("身份证号中的出生日期超出范围"))
    return number
