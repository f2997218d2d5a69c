"""Log filters. Logs never carry a full phone, ID number or personal name.

The filter sits on every handler the project configures (Celery's workers
use the same configuration, see ``config/celery.py``), and masks all of a
record that a formatter prints: the message, the exception text with its
traceback, and the stack.
"""

from __future__ import annotations

import logging
import traceback

from config.masking import mask_text


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
