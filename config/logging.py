"""Log filters. Logs never carry a full phone, ID number or personal name.

The filter sits on every handler the project configures (Celery's workers
use the same configuration, see ``config/celery.py``), and masks all of a
record that a formatter prints: the message, the exception text with its
traceback, and the stack.
"""

from __future__ import annotations

import logging
import re
import traceback

# Mainland mobile numbers (with or without +86 / 0086) and resident ID
# numbers, not inside longer digit runs.
_PHONE = re.compile(r"(?<![\d+])((?:\+?86|0086)[ -]?)?(1[3-9]\d)[ -]?\d{4}[ -]?(\d{4})(?!\d)")
_ID_NUMBER = re.compile(r"(?<![\dA-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![\dA-Za-z])")
# A person's name has no shape of its own; it is masked where a key says
# what it is: JSON and Python reprs ("name": "张三", 'real_name': '张三'),
# keyword arguments (real_name=张三) and database messages
# (Key (real_name)=(张三)). Han characters, optionally with the middle dot
# of minority and foreign names.
_NAME_KEYS = r"real_?name|full_?name|name|applicant_?name|payer_?name|姓名"
_NAME = re.compile(
    rf"""(?P<key>(?<![A-Za-z_])["']?\(?(?:{_NAME_KEYS})\)?["']?\s*[:=：]\s*\(?["']?)"""
    r"(?P<first>[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef])"
    r"(?P<rest>[\u3400-\u4dbf\u4e00-\u9fff\U00020000-\U0002ebef·•]{1,20})",
    re.IGNORECASE,
)


def mask_text(text: str) -> str:
    """``text`` with every phone, ID number and keyed personal name masked."""
    text = _ID_NUMBER.sub(r"\1********\2", text)
    text = _PHONE.sub(lambda m: f"{m.group(1) or ''}{m.group(2)}****{m.group(3)}", text)
    return _NAME.sub(lambda m: m["key"] + m["first"] + "*" * len(m["rest"]), text)


class MaskPiiFilter(logging.Filter):
    """Masks what the formatter will print of every record: the rendered
    message, the exception with its traceback, and the stack.

    Formatters print ``record.exc_text`` when it is set, so the exception is
    rendered and masked here, once, for every handler after this one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = mask_text(message), None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True
