"""Start the whole system on one machine: web, Celery worker, Celery beat and
the demo department backend.

``make run`` calls this after migrating and seeding. Output of every process
is shown with its name; Ctrl-C stops them all. If one process dies, the rest
are stopped too, so a broken start is never mistaken for a running system.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")


def commands() -> dict[str, list[str]]:
    return {
        "web": [
            str(BIN / "gunicorn"),
            "--config",
            "config/gunicorn.py",
            "config.wsgi",
            "--bind",
            f"{HOST}:{PORT}",
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
            "--api",
            f"http://{HOST}:{PORT}",
        ],
    }


def pump(name: str, stream) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{name:>7} | {line}")
        sys.stdout.flush()


def banner() -> str:
    base = f"http://{HOST}:{PORT}"
    password = os.environ.get("DEMO_ADMIN_PASSWORD", "changsha-demo")
    return "\n".join(
        [
            "",
            "My Changsha is running (embedded default: SQLite + server-less broker)",
            f"  API docs (Swagger UI)  {base}/api/docs/",
            f"  OpenAPI schema         {base}/api/schema/",
            f"  Admin                  {base}/admin/   (admin / {password})",
            f"  Health                 {base}/healthz  {base}/readyz",
            "  Demo citizen           13800138000: POST /api/v1/auth/otp/,",
            "                         the SMS code is printed below by 'web'",
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
