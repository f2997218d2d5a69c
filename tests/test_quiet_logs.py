"""Logs an operator can read: the routine periodic tasks (the sweepers,
every few seconds) do not fill them, what they find still shows, and the
broker connects without a warning per task sent."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from typing import Any

import pytest
from celery.app import trace
from django.conf import settings
from django.utils import timezone

from config.logging import QuietRoutineTasks, routine_tasks

BEAT_LINE = "Scheduler: Sending due task %s (%s)"


def record(
    logger: str, msg: str, args: tuple[object, ...], *, level: int = logging.INFO, data=None
):
    """A record as Celery's loggers make it."""
    extra = {"data": data} if data is not None else None
    return logging.getLogger(logger).makeRecord(
        logger, level, __file__, 1, msg, args, None, extra=extra
    )


def received(task: str):
    context = {"id": "4f1c", "name": task, "args": "()", "kwargs": "{}", "eta": None}
    return record("celery.worker.strategy", trace.LOG_RECEIVED, (context,), data=context)


def succeeded(task: str, result: str):
    context = {"id": "4f1c", "name": task, "return_value": result, "runtime": 0.01}
    context |= {"args": "()", "kwargs": "{}"}
    return record("celery.app.trace", trace.LOG_SUCCESS, (context,), data=context)


@pytest.fixture
def quiet() -> QuietRoutineTasks:
    return QuietRoutineTasks()


def test_the_sweepers_are_routine_and_the_daily_jobs_are_not() -> None:
    routine = routine_tasks(settings.CELERY_BEAT_SCHEDULE)
    assert {"routing.sweep", "payments.sweep"} <= routine
    if "qr-flush-scan-events" in settings.CELERY_BEAT_SCHEDULE:  # with Redis
        assert "qr.flush_scan_events" in routine
    assert "payments.reconcile" not in routine  # once a day
    assert "accounts.purge_otp_challenges" not in routine  # hourly


def test_beat_sending_a_sweep_is_not_logged_but_a_daily_job_is(quiet) -> None:
    assert not quiet.filter(record("celery.beat", BEAT_LINE, ("routing-sweep", "routing.sweep")))
    daily = record("celery.beat", BEAT_LINE, ("payments-reconcile", "payments.reconcile"))
    assert quiet.filter(daily)


def test_an_empty_sweep_says_nothing_and_one_that_found_work_says_so(quiet) -> None:
    assert not quiet.filter(received("routing.sweep"))
    assert not quiet.filter(succeeded("routing.sweep", "{'deliveries': 0, 'events': 0}"))
    assert not quiet.filter(succeeded("payments.sweep", "{'closed': 0, 'queried': 0}"))
    assert quiet.filter(succeeded("routing.sweep", "{'deliveries': 3, 'events': 0}"))
    assert quiet.filter(succeeded("payments.sweep", "{'closed': 1, 'queried': 0}"))


def test_other_tasks_are_logged_as_before(quiet) -> None:
    assert quiet.filter(received("routing.deliver"))
    assert quiet.filter(succeeded("routing.deliver", "None"))
    assert quiet.filter(record("celery.app.trace", "something else %s", ("x",)))


def test_a_routine_task_that_fails_is_always_logged(quiet) -> None:
    failed = record("celery.app.trace", "Task %s raised", ("routing.sweep",), level=logging.ERROR)
    assert quiet.filter(failed)
    odd = succeeded("routing.sweep", "<object at 0x7f>")  # not a literal: shown
    assert quiet.filter(odd)
    context = {"id": "4f1c", "name": "routing.sweep", "exc": "OperationalError()"}
    retried = record("celery.app.trace", trace.LOG_RETRY, (context,), data=context)
    assert quiet.filter(retried)  # an INFO line, but something went wrong


def test_the_console_handler_quiets_before_it_masks() -> None:
    """The mask renders the message and drops the arguments the quieting reads."""
    config: dict[str, Any] = settings.LOGGING
    assert config["handlers"]["console"]["filters"] == ["quiet_routine", "mask_pii"]


def test_the_broker_connects_without_a_warning(caplog) -> None:
    from config.celery import app

    with caplog.at_level(logging.WARNING, logger="kombu"), app.connection_for_write() as conn:
        conn._info()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("kombu")] == []


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(180)
def test_a_real_worker_logs_the_sweep_only_when_it_finds_something(tmp_path) -> None:
    """A worker with beat, sweeping every second: one straggler event is
    found and named; the empty sweeps before and after leave no line."""
    from services.models import OutboxEvent
    from tests.processes import celery_worker, wait_for

    beat = ["-B", "--scheduler", "celery.beat:PersistentScheduler", "-s", str(tmp_path / "beat")]
    log = tmp_path / "worker.log"
    with celery_worker(
        *beat, log=log, ROUTING_SWEEP_EVERY_SECONDS="1", ROUTING_SWEEP_GRACE_SECONDS="1"
    ):
        time.sleep(3)  # a few empty sweeps
        OutboxEvent.objects.create(
            type="ping", data={}, created_at=timezone.now() - dt.timedelta(minutes=1)
        )
        found = re.compile(r"routing\.sweep\[.*\] succeeded in .*'events': 1")
        wait_for(lambda: found.search(log.read_text()), timeout=30)
        time.sleep(3)  # and a few more
    lines = log.read_text()
    # Named at least once: a sweep that comes before the worker has marked
    # the event handled finds it again (on a loaded machine, more than one).
    assert len(found.findall(lines)) >= 1
    assert "Sending due task routing-sweep" not in lines
    assert not re.search(r"routing\.sweep\[[^\]]*\] received", lines)
    assert "'deliveries': 0, 'events': 0" not in lines
    assert not re.search(r"qr\.flush_scan_events\[[^\]]*\] (received|succeeded)", lines)


@pytest.mark.timeout(120)
def test_gunicorns_master_and_workers_log_in_one_time_zone(tmp_path) -> None:
    """Started as make run and production start it (``-c config/gunicorn.py``),
    in an environment set to UTC: every line is in Asia/Shanghai, the
    master's as the workers'."""
    import os
    import zoneinfo

    from tests.processes import configured_web_server

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {
        "TZ": "UTC",  # as many container images set it
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    log = tmp_path / "web.log"
    with configured_web_server(env, log):
        pass  # up: the master and a worker have logged
    lines = log.read_text()
    stamps = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+\+08:00 \w+ (\S+)", lines, re.M)
    loggers = {name for _, name in stamps}
    assert {"gunicorn.error", "gunicorn.access"} <= loggers, lines  # master and worker
    shanghai = dt.datetime.now(zoneinfo.ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)
    for stamp, name in stamps:
        off = abs(dt.datetime.fromisoformat(stamp) - shanghai)
        assert off < dt.timedelta(minutes=5), f"{name} logged {stamp}, not Shanghai time"


@pytest.mark.django_db
def test_an_unexpected_error_is_logged_once_with_its_traceback(api, monkeypatch, caplog) -> None:
    """A view that fails unexpectedly answers a 500 problem and leaves one
    ERROR line with the traceback, not a second one from Django's request
    logger."""
    from services import selectors

    def broken():
        raise RuntimeError("the catalog's table is gone")

    monkeypatch.setattr(selectors, "categories_public", broken)
    with caplog.at_level(logging.ERROR):
        response = api.get("/api/v1/categories/")
    assert response.status_code == 500
    assert response.json()["code"] == "server_error"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["config.api"], [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None


def test_debug_logging_does_not_dump_template_contexts(tmp_path) -> None:
    """With LOG_LEVEL=DEBUG, Django's template engine logs every variable a
    template cannot resolve with the whole context in the exception's text:
    an admin page's CSRF token, one-time secrets, form values. That logger
    stays at INFO, as the database's stays at WARNING (its SQL parameters)."""
    import os
    import subprocess
    import sys

    from tests.processes import ROOT

    script = (
        "import django; django.setup()\n"
        "from django.template import Context, Template\n"
        "Template('{{ subtitle }}').render("
        "Context({'secret': 'whsec_Zm9vYmFyYmF6cXV4'}))\n"
        "import logging; logging.getLogger('probe').debug('debug lines are on')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env |= {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "LOG_LEVEL": "DEBUG",
    }
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "debug lines are on" in run.stderr
    assert "whsec_" not in run.stderr
    assert "django.template" not in run.stderr


@pytest.mark.parametrize(
    ("msg", "args"),
    [("%(a)s", ({"b": 1},)), ("%c", (10**10,)), ("%s", (type("Broken", (), {"__str__": None})(),))],
)
def test_a_log_call_that_cannot_be_formatted_never_fails_its_caller(msg, args) -> None:
    """logging reports a record it cannot format and carries on; the mask,
    which formats every record before any handler, must too: a payment or a
    request is not failed by a malformed log line (its own or a library's)."""
    from config.logging import MaskPiiFilter

    unformattable = logging.getLogger("tests").makeRecord(
        "tests", logging.WARNING, __file__, 1, msg, args, None
    )
    assert MaskPiiFilter().filter(unformattable) is True  # does not raise
    assert msg in logging.Formatter().format(unformattable)
