"""Start the whole system on one machine: web, Celery worker, Celery beat and
the demo department backend.

``make run`` calls this after migrating and seeding. Output of every process
is shown with its name; Ctrl-C stops them all. If one process dies, the rest
are stopped too, so a broken start is never mistaken for a running system.

Text messages (the login codes) go to ``SMS_FILE_PATH`` (the ``file`` SMS
backend, unless ``SMS_BACKEND`` says otherwise), one JSON line each, where
the README's walkthrough reads them; each is also shown, as ``sms``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")
SMS_FILE = Path(os.environ.get("SMS_FILE_PATH", ROOT / "var" / "sms-outbox.jsonl"))


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


# The web and the demo department listen on the IPv6 loopback too, where the
# machine has one (a client resolving "localhost" may try ::1 first);
# HOST6= (empty) turns it off.
HOST6 = os.environ.get("HOST6", "::1" if HOST == "127.0.0.1" and ipv6_loopback() else "")


def commands() -> dict[str, list[str]]:
    return {
        "web": [
            str(BIN / "gunicorn"),
            "--config",
            "config/gunicorn.py",
            "config.wsgi",
            "--bind",
            f"{HOST}:{PORT}",
            *(["--bind", f"[{HOST6}]:{PORT}"] if HOST6 else []),
            "--workers",
            os.environ.get("WEB_CONCURRENCY", "2"),
        ],
        "worker": [
            str(BIN / "celery"),
            "-A",
            "config",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
        ],
        "beat": [str(BIN / "celery"), "-A", "config", "beat", "--loglevel", "INFO"],
        "dept": [
            str(BIN / "python"),
            "manage.py",
            "department_stub",
            "--port",
            os.environ.get("STUB_PORT", "9001"),
            "--host",
            HOST,
            *(["--host", HOST6] if HOST6 else []),
            "--api",
            f"http://{HOST}:{PORT}",
        ],
    }


def pump(name: str, stream) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{name:>7} | {line}")
        sys.stdout.flush()


def follow_sms(
    path: Path, stopping: threading.Event, started: threading.Event | None = None
) -> None:
    """Shows each message the file SMS backend appends, from now on
    (``started`` is set once "now" is taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    status = path.stat()
    position, inode = status.st_size, status.st_ino
    if started is not None:
        started.set()
    while not stopping.wait(0.3):
        try:
            status = path.stat()
        except FileNotFoundError:
            continue
        size = status.st_size
        if size < position or status.st_ino != inode:  # truncated or replaced: from its start
            position, inode = 0, status.st_ino
        if size == position:
            continue
        with path.open("rb") as handle:
            handle.seek(position)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        position += len(complete)
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                message = json.loads(line)
                shown = f"to {message['to']}: {message['text']}"
            except (ValueError, KeyError, TypeError):
                shown = line
            sys.stdout.write(f"{'sms':>7} | {shown}\n")
            sys.stdout.flush()


def stack() -> str:
    if not any(os.environ.get(name) for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")):
        return "embedded default: SQLite + server-less broker"
    database = os.environ.get("DATABASE_URL", "sqlite").split(":", 1)[0]
    if os.environ.get("CELERY_BROKER_URL"):
        broker = f"CELERY_BROKER_URL {os.environ['CELERY_BROKER_URL'].split(':', 1)[0]}"
    else:
        broker = "Redis" if os.environ.get("REDIS_URL") else "server-less broker"
    return f"DATABASE_URL {database} + {broker}"


def sms_where() -> str:
    if os.environ.get("SMS_BACKEND", "file") != "file":
        return f"SMS_BACKEND={os.environ['SMS_BACKEND']}"
    try:
        shown = SMS_FILE.resolve().relative_to(ROOT)
    except ValueError:
        shown = SMS_FILE
    return f"{shown} (shown below as 'sms')"


def banner() -> str:
    base = f"http://{HOST}:{PORT}"
    # The demo's own password is shown; one the operator chose is not.
    chosen = os.environ.get("DEMO_ADMIN_PASSWORD")
    password = "the password in DEMO_ADMIN_PASSWORD" if chosen else "changsha-demo"
    return "\n".join(
        [
            "",
            f"My Changsha is running ({stack()})",
            f"  Start page             {base}/",
            *([f"  Also over IPv6         http://[{HOST6}]:{PORT}/"] if HOST6 else []),
            f"  API docs               {base}/api/docs/ (Swagger UI), {base}/api/redoc/ (ReDoc)",
            f"  OpenAPI schema         {base}/api/schema/",
            f"  Error codes            {base}/api/problems/",
            f"  Admin                  {base}/admin/   (admin / {password})",
            f"  Health                 {base}/healthz  {base}/readyz",
            "  Demo citizen           13800138000: POST /api/v1/auth/otp/, then the code",
            f"                         from {sms_where()}",
            "  Demo departments       'dept' receives their signed events and reports",
            "                         progress back (accepted, then completed)",
            "  Payments (sandbox)     POST /api/v1/payments/, then the sandbox wallet:",
            "                         POST /api/v1/sandbox/payments/<order_no>/pay/",
            "  Stop with Ctrl-C",
            "",
        ]
    )


def main() -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Login codes to a file: the walkthrough reads them from there.
    env.setdefault("SMS_BACKEND", "file")
    env.setdefault("SMS_FILE_PATH", str(SMS_FILE))
    # The sandbox channels call the web process back here.
    env.setdefault("PAYMENTS_NOTIFY_BASE_URL", f"http://{HOST}:{PORT}")
    processes: dict[str, subprocess.Popen] = {}
    for name, command in commands().items():
        processes[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=pump, args=(name, processes[name].stdout), daemon=True).start()

    stopping = threading.Event()
    if env["SMS_BACKEND"] == "file":
        sms_file = Path(env["SMS_FILE_PATH"])
        threading.Thread(target=follow_sms, args=(sms_file, stopping), daemon=True).start()

    def stop(*_args: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    time.sleep(2)
    print(banner(), flush=True)

    exit_code = 0
    while not stopping.is_set():
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"{name} exited with {process.returncode}; stopping the rest", flush=True)
                exit_code = 1
                stopping.set()
                break
        stopping.wait(0.5)

    # Each leader shuts its own children down (Celery's pool, gunicorn's
    # workers); only a leader that hangs gets its whole group killed.
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
