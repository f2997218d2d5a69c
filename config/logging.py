"""Log filters and the formatter. Logs never carry a full phone, ID number or personal name,
and the routine periodic tasks (the sweepers) do not fill them every few
seconds (:class:`QuietRoutineTasks`).

The filter sits on every handler the project configures (Celery's workers
use the same configuration, see ``config/celery.py``), and masks all of a
record that a formatter prints: the message, the exception text with its
traceback, and the stack. Every line's time carries its offset
(:class:`LocalTimeFormatter`): one zone, and no line misread as UTC.
"""

from __future__ import annotations

import ast
import datetime as dt
import logging
import traceback
from typing import Any

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
        except Exception:
            # A call whose arguments do not fit its format ("%(a)s" with no
            # "a", "%c" of a huge number, an argument whose str() fails):
            # logging itself reports such a record and carries on
            # (Handler.handleError catches any Exception); this filter runs
            # before that, and must not fail the caller either.
            message = f"{record.msg} (arguments that do not fit the format left out)"
        record.msg, record.args = mask_text(message), None
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


# Beat entries that run at least this often are routine: their sending,
# receipt and empty results are not news.
ROUTINE_EVERY_SECONDS = 60.0

# Celery's INFO lines about one task: beat sending it, a worker receiving it,
# a worker finishing it.
_TASK_LINES = {"celery.beat", "celery.worker.strategy", "celery.app.trace"}


def routine_tasks(schedule: dict[str, dict[str, Any]]) -> frozenset[str]:
    """The task names of beat entries that run every ``ROUTINE_EVERY_SECONDS`` or more often."""
    names = set()
    for entry in schedule.values():
        every = entry.get("schedule")
        if isinstance(every, dt.timedelta):
            every = every.total_seconds()
        if isinstance(every, int | float) and every <= ROUTINE_EVERY_SECONDS:
            names.add(entry["task"])
    return frozenset(names)


def _did_nothing(value: object) -> bool:
    """None, zero, empty, or a dict or list of nothing but those."""
    if isinstance(value, dict):
        return all(_did_nothing(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_did_nothing(v) for v in value)
    return not value


class QuietRoutineTasks(logging.Filter):
    """Drops Celery's INFO lines about routine periodic tasks (the sweepers,
    every few seconds): beat sending one, a worker receiving one, and a
    worker finishing one that found nothing to do. A routine task that did
    something still says so ("succeeded …: {'deliveries': 3}"), and warnings
    and errors always pass. Sits before the PII mask, which drops the
    record's arguments."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._routine: frozenset[str] | None = None

    @property
    def routine(self) -> frozenset[str]:
        if self._routine is None:
            from django.conf import settings

            self._routine = routine_tasks(getattr(settings, "CELERY_BEAT_SCHEDULE", {}))
        return self._routine

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.name not in _TASK_LINES:
            return True
        if record.name == "celery.beat":
            args = record.args if isinstance(record.args, tuple) else ()
            task = args[1] if len(args) == 2 and "Sending due task" in str(record.msg) else None
            return task not in self.routine
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or data.get("name") not in self.routine:
            return True
        if "return_value" not in data:
            # Only "received" goes; "retry", "ignored" and the like say
            # something happened.
            from celery.app.trace import LOG_RECEIVED

            return record.msg != LOG_RECEIVED
        try:
            result = ast.literal_eval(str(data["return_value"]))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return True
        return not _did_nothing(result)


class LocalTimeFormatter(logging.Formatter):
    """``%(asctime)s`` as ``2026-12-07 09:30:00,541+08:00``: the process's
    time zone (``TIME_ZONE``, Asia/Shanghai) with its offset."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        offset = dt.datetime.fromtimestamp(record.created).astimezone().strftime("%z")
        return f"{super().formatTime(record, datefmt)}{offset[:3]}:{offset[3:]}"
