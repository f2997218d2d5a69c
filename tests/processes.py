"""Real processes for integration tests and benchmarks: gunicorn and a
Celery worker on this process's database and Redis, a Redis of its own, and
the whole system as ``make run`` starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that shares this one's database and Redis."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


@contextmanager
def celery_worker(
    *args: str, log: Path | None = None, wait: bool = True, **env: str
) -> Iterator[subprocess.Popen]:
    """``celery -A config worker`` as production starts it (no -Q: every queue).

    ``wait``: until the worker logs that it is ready (which it does at the
    INFO level; a caller logging less, like a benchmark, passes False)."""
    log = (
        log or Path(os.environ.get("TMPDIR", "/tmp")) / f"worker-{os.getpid()}-{time.time_ns()}.log"
    )
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO", *args]
    with _child_process(argv, log, env) as process:
        if wait:
            _await_start(process, log, lambda: "ready." in log.read_text(), "worker")
        process.log = log  # type: ignore[attr-defined]  # the log path rides on the process for the caller
        yield process


def wait_for(predicate, timeout: float = 30, interval: float = 0.1, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message or "condition not met in time")
        time.sleep(interval)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def web_server(
    *, workers: int = 2, log: Path | None = None, port: int | None = None, **env: str
) -> Iterator[str]:
    """The project under gunicorn with its production Django settings;
    yields its base URL. ``port``: one chosen before (when the server must
    know its own address). Started without ``config/gunicorn.py``: no access
    log line per request (the benchmarks measure the application; a line a
    request would weigh on both sides of every ratio); the tests of that
    file's settings start gunicorn with it (tests/test_forwarded_headers.py,
    tests/test_quiet_logs.py, tests/test_api_docs.py)."""
    port = port or free_port()
    log = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"web-{os.getpid()}-{port}.log"
    argv = [sys.executable, "-m", "gunicorn", "config.wsgi"]
    with _gunicorn(argv, port, workers, log, process_env(**env)) as base:
        yield base


@contextmanager
def configured_web_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """gunicorn as production and ``make run`` start it (``-c
    config/gunicorn.py``), one worker, in exactly the environment ``env``
    (not this process's database and Redis); yields its base URL."""
    argv = [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
    with _gunicorn(argv, free_port(), 1, log, env) as base:
        yield base


@contextmanager
def _gunicorn(
    argv: list[str], port: int, workers: int, log: Path, env: dict[str, str]
) -> Iterator[str]:
    import httpx

    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    argv = [*argv, "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    with _spawned(argv, log, env) as process:
        _await_start(process, log, healthy, "web server")
        yield base


def _child_process(argv: list[str], log: Path, env: dict[str, str]) -> Any:
    """``argv`` on this process's database and Redis (and ``env``), in a
    session of its own, logging to ``log``; stopped on the way out."""
    return _spawned(argv, log, process_env(**env))


@contextmanager
def _spawned(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """``argv`` in exactly the environment ``env``, in a session of its
    own, logging to ``log``; stopped on the way out."""
    handle = log.open("w")
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        handle.close()


def _await_start(
    process: subprocess.Popen, log: Path, ready: Callable[[], bool], name: str
) -> None:
    """Waits up to a minute for ``ready()``; a child that dies or is late fails with its log."""
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A Redis of its own on a free port, that a test may stop and start."""
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RedisServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        wait_for(lambda: _answers(client), timeout=20, message="redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _answers(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@contextmanager
def make_run(tmp_path: Path, **env: str) -> Iterator[tuple[str, Path]]:
    """``scripts/run_all.py``, what ``make run`` starts after migrating and
    seeding, on this test's database and Redis and on free ports; yields the
    web address and the file its output goes to. Text messages go where make
    run keeps them, under ``tmp_path``: ``tmp_path/var/sms-outbox.jsonl``."""
    import httpx

    port = free_port()
    log = tmp_path / "make-run.log"
    child_env = process_env(
        PORT=str(port),
        STUB_PORT=str(free_port()),
        SMS_FILE_PATH=str(tmp_path / "var" / "sms-outbox.jsonl"),
        **env,
    )
    child_env.pop("SMS_BACKEND", None)  # make run's own choice
    base = f"http://127.0.0.1:{port}"

    def answers(url: str) -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    with log.open("w") as handle:
        runner = subprocess.Popen(
            [sys.executable, "scripts/run_all.py"],
            cwd=ROOT,
            env=child_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def ready() -> bool:
                assert runner.poll() is None, log.read_text()
                output = log.read_text()
                return "My Changsha is running" in output and "listening on" in output

            wait_for(ready, timeout=90, message="make run did not start")
            wait_for(lambda: answers(f"{base}/readyz"), timeout=60, message="web not ready")
            yield base, log
        finally:
            runner.terminate()  # it stops its children, as Ctrl-C does
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
