"""Log filters. Logs never carry a full phone or ID number."""

from __future__ import annotations

import logging
import re

# Mainland mobile numbers and resident ID numbers, not inside longer digit runs.
_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_ID_NUMBER = re.compile(r"(?<![\dA-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![\dA-Za-z])")


def mask_text(text: str) -> str:
    text = _ID_NUMBER.sub(r"\1********\2", text)
    return _PHONE.sub(r"\1****\2", text)


class MaskPiiFilter(logging.Filter):
    """Masks phone and ID numbers in the rendered message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
