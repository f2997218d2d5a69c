"""Payments figures, each next to the floor (``/bench/bare``) of the same run.

    .venv/bin/python benchmarks/payments.py [--seconds 5] [--rounds 3] [--profile]

Runs the real stack on a scratch PostgreSQL database and an empty Redis
database: gunicorn (production settings, DEBUG=0, the payments sandbox on,
2 sync workers), load from ``wrk`` in another process (16 connections) with
``benchmarks/payments_wrk.lua``, which sends every request of a run once:

1. valid callbacks/s: ``POST /api/v1/payments/notify/wechat/``, each a
   genuine signed WeChat Pay callback (built by the sandbox channel) for a
   different pending order, opened through ``payments.orders.order_create``
   for a different citizen's application and paid with
   ``payments.sandbox.books.trade_pay``;
2. duplicate callbacks/s: the first ``--duplicate-pool`` (3000) of those
   callbacks again, once applied (by this process, as a payments worker
   would, timed), round after round (each for a different order, paid);
3. order creations/s: ``POST /api/v1/payments/``, each by a different
   citizen (own JWT) for their own application awaiting payment.

Floor and endpoint runs alternate (A B A B ...); the figure quoted is the
median of the per-round ratios. Throttles are raised for the run
(``PAYMENTS_NOTIFY_RATE``), and the output says so.

Each round also records CPU milliseconds per request of gunicorn, of the
scratch database's PostgreSQL backends and of wrk (Linux ``/proc``), and how
much of the machine other processes used meanwhile: on a shared machine
that is what makes two runs differ.

Before the load runs, one request of each kind is made in this process
under ``CaptureQueriesContext`` and its SQL statements are counted and
listed; with ``--profile`` (and ``pyinstrument`` importable) a batch of
each is profiled in this process and the breakdown printed.

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install -y wrk``), PostgreSQL
(``BENCH_PG``, default ``postgres://postgres@127.0.0.1:5432``) and Redis
(``BENCH_REDIS``, default ``redis://127.0.0.1:6379``). The scratch database,
the Redis database, the sandbox keys and the request files are removed when
it ends.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "benchmarks" / "payments_wrk.lua"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
CHANNEL = "wechat"
FEE_FEN = 2000
FORM = {"reason": "首次申领", "phone": "13800138000"}
NOTIFY_PATH = f"/api/v1/payments/notify/{CHANNEL}/"
CREATE_PATH = "/api/v1/payments/"
RAISED_RATES = {"PAYMENTS_NOTIFY_RATE": "100000000/min"}
GOALS = {"valid": 0.50, "duplicate": 0.50, "create": 0.20}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_redis_db() -> int:
    import redis

    for number in range(15, 9, -1):
        if redis.Redis.from_url(f"{REDIS}/{number}").dbsize() == 0:
            return number
    raise SystemExit("no empty Redis database between 10 and 15")


# --- Requests and the load generator ------------------------------------------------------------


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def write_records(path: Path, requests: Iterable[bytes]) -> Path:
    with path.open("wb") as handle:
        for request in requests:
            handle.write(b"%d\n" % len(request))
            handle.write(request)
    return path


class Wrk:
    """``wrk`` runs of ``payments_wrk.lua`` against one server."""

    def __init__(
        self,
        base: str,
        *,
        connections: int,
        threads: int,
        work: Path,
        meter: CpuMeter | None = None,
    ) -> None:
        binary = shutil.which("wrk")
        if binary is None:
            raise SystemExit(
                "wrk is not installed. Install it (Debian/Ubuntu: `sudo apt-get install -y wrk`; "
                "macOS: `brew install wrk`) and run again."
            )
        self.binary, self.base = binary, base
        self.connections, self.threads, self.work = connections, threads, work
        self.files = 0
        self.meter = meter

    def run(
        self, requests: list[bytes], *, expect: int, seconds: float, wrap: bool = False
    ) -> dict[str, Any]:
        if len(requests) < self.threads:
            raise ValueError(f"{len(requests)} requests for {self.threads} wrk threads")
        self.files += 1
        path = write_records(self.work / f"requests-{self.files}.bin", requests)
        argv = [
            self.binary,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "30s",
            "-s",
            str(LUA),
            self.base,
            "--",
            str(path),
            str(expect),
            str(self.threads),
            *(["wrap"] if wrap else []),
        ]
        before = self.meter.read() if self.meter else {}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
        after = self.meter.read() if self.meter else {}
        path.unlink()
        match = re.search(r"^WRK-RESULT (\{.*\})$", done.stdout, re.MULTILINE)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        result: dict[str, Any] = json.loads(match.group(1))
        result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
        result["p50_ms"] = result["p50_us"] / 1000
        result["p99_ms"] = result["p99_us"] / 1000
        result["errors"] = result["unexpected"] + sum(
            result[k] for k in ("connect", "read", "write", "timeout")
        )
        result["stderr"] = done.stderr.strip()
        result["cpu"] = CpuMeter.delta(before, after, result["requests"]) if self.meter else {}
        return result


# --- Seeding through the real code --------------------------------------------------------------


class Seeder:
    """Citizens, their applications and orders, made with the project's own functions."""

    def __init__(self) -> None:
        from accounts.departments import department_ensure
        from services.catalog import category_ensure, service_create

        department, _ = department_ensure(code="bench-pay", name="基准测试部门")
        self.service = service_create(
            code="bench-fee",
            department=department,
            actor=None,
            name="居民身份证换领",
            category=category_ensure(code="bench", name="基准"),
            channels=["online"],
            identity_level=1,
            fee_fen=FEE_FEN,
            form_schema={
                "type": "object",
                "required": ["reason", "phone"],
                "properties": {
                    "reason": {"type": "string", "minLength": 2},
                    "phone": {"type": "string", "pattern": "^1[3-9]\\d{9}$"},
                },
            },
        )
        self.citizens_made = 0

    def applications(self, count: int) -> list[Any]:
        """``count`` new citizens, each with one application awaiting payment
        (``services.applications.application_submit``)."""
        from django.contrib.auth.hashers import make_password

        from accounts.models import User
        from services.applications import application_submit

        start = self.citizens_made
        self.citizens_made += count
        unusable = make_password(None)
        citizens = User.objects.bulk_create(
            [User(phone=f"139{start + i:08d}", password=unusable) for i in range(count)]
        )
        made = [
            application_submit(citizen=citizen, service=self.service, form=FORM)
            for citizen in citizens
        ]
        assert all(a.status == "awaiting_payment" and a.fee_fen == FEE_FEN for a in made)
        return made

    def create_requests(self, count: int) -> list[bytes]:
        """Order creations, each by a different citizen for their own application."""
        from rest_framework_simplejwt.tokens import AccessToken

        return [
            raw_request(
                "POST",
                CREATE_PATH,
                {
                    "Authorization": f"Bearer {AccessToken.for_user(application.applicant)}",
                    "Content-Type": "application/json",
                },
                json.dumps({"application": str(application.pk), "channel": CHANNEL}).encode(),
            )
            for application in self.applications(count)
        ]

    def paid_trades(self, count: int) -> list[Any]:
        """Pending orders (``payments.orders.order_create``), each of a
        different citizen, paid at the sandbox channel; no callback sent yet."""
        from payments import orders
        from payments.sandbox import books

        trades = []
        for application in self.applications(count):
            order, created = orders.order_create(
                citizen=application.applicant, application_id=application.pk, channel=CHANNEL
            )
            assert created and order.status == "pending"
            trades.append(books.trade_pay(channel=CHANNEL, order_no=order.order_no, succeed=True))
        return trades


def _seed_share(seeder: Seeder, method: str, start: int, count: int) -> list[Any]:
    seeder.citizens_made = start
    result: list[Any] = getattr(seeder, method)(count)
    return result


def seed_in_parallel(seeder: Seeder, method: str, count: int) -> list[Any]:
    """``seeder.<method>(count)`` (``create_requests`` or ``paid_trades``)
    split over one forked process per CPU, each with its own citizens: the
    same functions, in a fraction of the time."""
    import multiprocessing

    from django.db import connections

    processes = max(1, min(os.cpu_count() or 1, count // 100))
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    starts = [seeder.citizens_made + sum(shares[:i]) for i in range(processes)]
    seeder.citizens_made += count
    connections.close_all()  # each process opens its own
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.starmap(
            _seed_share,
            [(seeder, method, start, n) for start, n in zip(starts, shares, strict=True)],
        )
    return [item for part in parts for item in part]


def notify_request(trade: Any) -> bytes:
    """The sandbox channel's genuine signed callback for ``trade``, stamped now."""
    from payments.sandbox.channels import sandbox_for

    built = sandbox_for(CHANNEL).payment_notify(trade)
    assert built is not None
    headers, body = built
    return raw_request("POST", NOTIFY_PATH, headers, body)


# --- In-process: SQL statements and profile ---------------------------------------------------


def wsgi_call(request: bytes) -> int:
    """Send one raw request through the WSGI application gunicorn serves
    (``config.wsgi``: the fast paths, then Django's handler with all its
    middleware) in this process; the HTTP status."""
    import io
    from urllib.parse import urlsplit

    head, _, body = request.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode().split("\r\n")
    method, target, _protocol = request_line.split(" ")
    url = urlsplit(target)
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": url.path,
        "QUERY_STRING": url.query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for line in header_lines:
        name, _, value = line.partition(": ")
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    status: list[str] = []

    def start_response(line: str, headers: list, exc_info: Any = None) -> None:
        status.append(line)

    from config.wsgi import application

    response = application(environ, start_response)
    b"".join(response)
    if hasattr(response, "close"):
        response.close()
    return int(status[0].split()[0])


def count_queries(request: bytes, expect: int) -> tuple[list[str], int]:
    """The SQL statements Django sends for ``request`` (CaptureQueriesContext,
    which lists BEGIN and COMMIT too), and how many more statements reached
    PostgreSQL past Django's cursor wrapper (the ``SELECT 1`` of
    CONN_HEALTH_CHECKS), counted at psycopg's cursor."""
    import psycopg
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    seen: list[str] = []
    execute = psycopg.Cursor.execute

    def counting_execute(self: Any, query: Any, *a: Any, **kw: Any) -> Any:
        seen.append(str(query))
        return execute(self, query, *a, **kw)

    psycopg.Cursor.execute = counting_execute  # type: ignore[method-assign]
    try:
        with CaptureQueriesContext(connection) as captured:
            status = wsgi_call(request)
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    if status != expect:
        raise RuntimeError(f"in-process request answered {status}, not {expect}")
    statements = [query["sql"] for query in captured.captured_queries]
    # BEGIN/COMMIT/ROLLBACK are psycopg's own commands, not cursor executes.
    through_cursor = [s for s in statements if s not in ("BEGIN", "COMMIT", "ROLLBACK")]
    return statements, len(seen) - len(through_cursor)


def time_in_process(requests: list[bytes], expect: int) -> tuple[float, float]:
    """Mean wall and CPU milliseconds per request, in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    for request in requests:
        status = wsgi_call(request)
        if status != expect:
            raise RuntimeError(f"in-process request answered {status}, not {expect}")
    n = len(requests)
    return (time.perf_counter() - wall) * 1000 / n, (time.process_time() - cpu) * 1000 / n


def describe_sql(sql: str) -> str:
    """A statement in a few words: verb and table(s)."""
    text = " ".join(sql.split())
    verb = text.split(" ", 1)[0].upper()
    if verb == "SELECT":
        tables = re.findall(r'(?:FROM|JOIN) "(\w+)"', text)
        lock = " FOR UPDATE" if "FOR UPDATE" in text else ""
        return f"SELECT {', '.join(dict.fromkeys(tables))}{lock}"
    if verb == "INSERT":
        return "INSERT " + (re.findall(r'INTO "(\w+)"', text) or ["?"])[0]
    if verb == "UPDATE":
        return "UPDATE " + (re.findall(r'UPDATE "(\w+)"', text) or ["?"])[0]
    if verb == "DELETE":
        return "DELETE " + (re.findall(r'FROM "(\w+)"', text) or ["?"])[0]
    return text[:60]


# Where a sample's time goes: the innermost frame of its stack that one of
# these recognises (a C function is judged by its class, else by its caller).
CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    (
        "RSA / AES-GCM (cryptography)",
        lambda path, cls: "/cryptography/" in path or cls.startswith(("RSA", "AESGCM", "Fernet")),
    ),
    ("PostgreSQL round trips (psycopg)", lambda path, cls: "/psycopg/" in path),
    ("Redis (throttle, inbox, order facts)", lambda path, cls: "/redis/" in path),
    ("ORM: compiling queries, making objects", lambda path, cls: "/django/db/" in path),
    (
        "DRF (views, serializers, auth, JWT)",
        lambda path, cls: "/rest_framework" in path or "/jwt/" in path,
    ),
    (
        "i18n (message rendered in every language)",
        lambda path, cls: "/django/utils/translation/" in path or "/gettext" in path,
    ),
    ("payments sandbox channel (in-process)", lambda path, cls: "/payments/sandbox/" in path),
    ("httpx (provider to sandbox transport)", lambda path, cls: "/httpx/" in path),
    ("project code", lambda path, cls: str(ROOT) in path and "/.venv/" not in path),
    ("Django request/response, middleware", lambda path, cls: "/django/" in path),
]
# Functions whose inclusive time is reported (class name or "" and function).
WATCHED = [
    ("", "notify_receive"),
    ("WechatPayProvider", "notify_parse"),
    ("", "order_apply_result"),
    ("", "_locked"),
    ("", "_charge"),
    ("", "application_mark_paid"),
    ("", "event_publish"),
    ("", "message_post"),
    ("", "audit_record"),
    ("", "_log"),
    ("", "_facts_or_written"),
    ("", "inbox_offer"),
    ("NotifyFastPath", "__call__"),
    ("", "order_create"),
    ("WechatPayProvider", "checkout_create"),
    ("WechatSandbox", "handle"),
    ("", "application_of"),
    ("", "idempotent"),
    ("CitizenJWTAuthentication", "authenticate"),
    ("NotifyThrottle", "allow_request"),
    ("PaymentOrderSerializer", "data"),
    ("Atomic", "__exit__"),
]


def profile(requests: list[bytes], expect: int) -> tuple[str, dict[str, float], dict[str, float]]:
    """pyinstrument over ``requests`` sent in this process: the tree's top,
    self time by category, and time inside some functions (per request, ms)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    for request in requests:
        status = wsgi_call(request)
        if status != expect:
            profiler.stop()
            raise RuntimeError(f"profiled request answered {status}, not {expect}")
    session = profiler.stop()
    text = profiler.output_text(unicode=True, color=False, show_all=False)
    root = session.root_frame()
    by_category: dict[str, float] = {}
    by_function: dict[str, float] = {}

    def walk(frame: Any, stack: list[tuple[str, str]], inside: frozenset[str]) -> None:
        stack = [*stack, (frame.file_path or "", frame.class_name or "")]
        label = next(
            (
                f"{cls}.{function}" if cls else function
                for cls, function in WATCHED
                if frame.function == function and (not cls or frame.class_name == cls)
            ),
            None,
        )
        if label and label not in inside:
            by_function[label] = by_function.get(label, 0.0) + frame.time
            inside = inside | {label}
        self_time = frame.time - sum(child.time for child in frame.children)
        if self_time > 0:
            category = "other (stdlib, WSGI glue)"
            for path, cls in reversed(stack):
                found = next((name for name, test in CATEGORIES if test(path, cls)), None)
                if found:
                    category = found
                    break
            by_category[category] = by_category.get(category, 0.0) + self_time
        for child in frame.children:
            walk(child, stack, inside)

    if root is not None:
        walk(root, [], frozenset())
    per = 1000 / len(requests)
    return (
        text,
        {k: v * per for k, v in by_category.items()},
        {k: v * per for k, v in by_function.items()},
    )


# --- CPU accounting (Linux /proc): ours, and everyone else's on this machine -----------------


def _processes() -> Iterable[tuple[int, str, float]]:
    """(pid, command line, CPU seconds) of every process we may read."""
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield int(entry.name), cmdline, (int(fields[11]) + int(fields[12])) / tick


def _machine() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    tick = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / tick, sum(values[:8]) / tick


class CpuMeter:
    """CPU seconds used by the web server (gunicorn master and workers), the
    PostgreSQL backends of the scratch database, and the load generator;
    and how much the rest of the machine used meanwhile (other people's
    work skews a run on a shared machine). Backends that exit between two
    readings are missed (connections live CONN_MAX_AGE=60 s)."""

    def __init__(self, port: int, database: str) -> None:
        self.port, self.database = f"127.0.0.1:{port}", database
        self.available = Path("/proc/stat").exists()

    def read(self) -> dict[str, Any]:
        import resource

        if not self.available:
            return {}
        processes: dict[int, tuple[str, float]] = {}
        for pid, cmdline, seconds in _processes():
            if self.port in cmdline and "gunicorn" in cmdline:
                processes[pid] = ("web", seconds)
            elif cmdline.startswith("postgres:") and f" {self.database} " in cmdline:
                processes[pid] = ("postgres", seconds)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy, total = _machine()
        return {
            "processes": processes,
            "wrk": children.ru_utime + children.ru_stime,
            "busy": busy,
            "total": total,
            "wall": time.monotonic(),
        }

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any], requests: int) -> dict[str, float]:
        if not before:
            return {}
        used = {"web": 0.0, "postgres": 0.0}
        for pid, (kind, seconds) in after["processes"].items():
            used[kind] += seconds - before["processes"].get(pid, (kind, 0.0))[1]
        wrk = after["wrk"] - before["wrk"]
        wall = after["wall"] - before["wall"]
        busy = after["busy"] - before["busy"]
        ours = used["web"] + used["postgres"] + wrk
        n = max(requests, 1)
        return {
            "web_ms": used["web"] * 1000 / n,
            "postgres_ms": used["postgres"] * 1000 / n,
            "wrk_ms": wrk * 1000 / n,
            "busy_cores": busy / wall,
            "others_cores": max(0.0, busy - ours) / wall,
        }


# --- The run ----------------------------------------------------------------------------------


def apply_received(limit: int | None = None) -> int:
    """Apply the callbacks the endpoint wrote down, oldest first, as the
    payments worker does (``payments.notifications.notifies_apply_waiting``):
    all of them, or about ``limit``; returns how many."""
    from payments import notifications

    total = 0
    while limit is None or total < limit:
        # Entries moved from the Redis inbox include repeats, which are
        # logged, not applied: go on while anything was looked at.
        seen, done = notifications.notifies_apply_waiting(limit=500)
        total += done
        if not seen:
            break
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds per figure")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument(
        "--profile", action="store_true", help="profile in process (needs pyinstrument)"
    )
    parser.add_argument("--profile-requests", type=int, default=150)
    parser.add_argument(
        "--duplicate-pool",
        type=int,
        default=3000,
        help="callbacks of the valid rounds applied (one worker process, timed) and sent again",
    )
    parser.add_argument(
        "--timed-requests", type=int, default=60, help="timed in process, without profiler"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed. Install it (Debian/Ubuntu: `sudo apt-get install -y wrk`; "
            "macOS: `brew install wrk`) and run again."
        )
    started = time.monotonic()

    database = f"mcs_bench_payments_{os.getpid()}"
    redis_url = f"{REDIS}/{free_redis_db()}"
    work = Path(tempfile.mkdtemp(prefix="bench-payments-"))
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"{PG}/{database}",
        "REDIS_URL": redis_url,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(30),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "SMS_BACKEND": "file",
        "BENCHMARK_VIEWS": "1",
        # DEBUG=0 turns the sandbox off unless asked for; every process of the
        # run (this one seeds and signs, gunicorn checks) shares its keys.
        "PAYMENTS_SANDBOX": "1",
        "PAYMENTS_SANDBOX_KEY_DIR": str(work / "sandbox-keys"),
        **RAISED_RATES,
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    # WhiteNoise warns that collectstatic has not run; nothing here serves static files.
    warnings.filterwarnings("ignore", message="No directory at")
    import psycopg
    import redis

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    running = ExitStack()
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db.models import Count

        from payments.models import LedgerEntry, NotifyLog, PaymentOrder
        from tests.processes import web_server

        call_command("migrate", verbosity=0)
        seeder = Seeder()

        # --- One of each in this process: SQL statements, then (optionally) the profile.
        log("counting SQL statements per request in process …")
        sql: dict[str, tuple[list[str], int]] = {}
        probe_trade = seeder.paid_trades(1)[0]
        probe_notify = notify_request(probe_trade)
        wsgi_call(raw_request("GET", "/bench/bare", {}))  # first-request setup out of the count
        sql["bare"] = count_queries(raw_request("GET", "/bench/bare", {}), 200)
        sql["valid"] = count_queries(probe_notify, 204)
        apply_received()  # what the payments worker does after the answer
        sql["duplicate"] = count_queries(probe_notify, 204)
        warm = seeder.create_requests(2)
        wsgi_call(warm[0])  # the provider, its keys and the sandbox, made once per process
        sql["create"] = count_queries(warm[1], 201)
        n = args.timed_requests
        valid = [notify_request(t) for t in seeder.paid_trades(n)]
        timings = {
            "bare": time_in_process([raw_request("GET", "/bench/bare", {})] * n, 200),
            "valid": time_in_process(valid, 204),
        }
        apply_received()
        timings["duplicate"] = time_in_process(valid, 204)
        timings["create"] = time_in_process(seeder.create_requests(n), 201)

        profiles: dict[str, tuple[str, dict[str, float], dict[str, float]]] = {}
        profiling = args.profile
        if profiling:
            try:
                import pyinstrument  # noqa: F401
            except ImportError:
                print("--profile: pyinstrument is not importable; no profile this time")
                profiling = False
        if profiling:
            log(f"profiling {args.profile_requests} requests of each kind in process …")
            n = args.profile_requests
            valid = [notify_request(t) for t in seeder.paid_trades(n)]
            profiles["valid"] = profile(valid, 204)
            apply_received()
            profiles["duplicate"] = profile(valid, 204)
            profiles["create"] = profile(seeder.create_requests(n), 201)

        # --- The server, warmed up; rough rates size the pools.
        from django.db import connections

        connections.close_all()
        base = running.enter_context(web_server(workers=args.workers, log=work / "web.log", **env))
        meter = CpuMeter(int(base.rsplit(":", 1)[1]), database)
        load = Wrk(
            base, connections=args.connections, threads=args.wrk_threads, work=work, meter=meter
        )
        # Every wrk thread needs records of its own; the floor's are all alike.
        bare = [raw_request("GET", "/bench/bare", {})] * (args.wrk_threads * args.connections)
        warm_seconds = 2.0
        log("seeding the warm-up pools …")
        t0 = time.monotonic()
        warm_create = seeder.create_requests(400)
        warm_trades = seeder.paid_trades(600)
        seed_rate = 1000 / (time.monotonic() - t0)
        log(f"warm-up (seeding ran at {seed_rate:.0f} orders+applications/s) …")
        load.run(bare, expect=200, seconds=warm_seconds, wrap=True)
        warm = {
            "create": load.run(warm_create, expect=201, seconds=warm_seconds),
        }
        warm_valid = [notify_request(t) for t in warm_trades]
        warm["valid"] = load.run(warm_valid, expect=204, seconds=warm_seconds)
        apply_received()
        applied = [
            r
            for r, t in zip(warm_valid, warm_trades, strict=True)
            if PaymentOrder.objects.filter(order_no=t.order_no, status="paid").exists()
        ]
        warm["duplicate"] = load.run(applied, expect=204, seconds=warm_seconds, wrap=True)
        for name, result in warm.items():
            log(f"  warm-up {name}: {result['rate']:.0f}/s, {result['errors']} errors")

        # Enough distinct requests that no round runs out: the faster of the
        # warm-up rate and what the workers could do at the in-process time
        # per request (this machine is shared; rates swing between rounds).
        per_round = {
            name: math.ceil(
                max(warm[name]["rate"], args.workers * 1000 / timings[name][0]) * args.seconds * 1.5
            )
            + 50
            for name in ("create", "valid")
        }
        log(
            f"seeding {per_round['create'] * args.rounds} applications for creation and "
            f"{per_round['valid'] * args.rounds} paid orders for callbacks …"
        )
        t0 = time.monotonic()
        trades = seed_in_parallel(seeder, "paid_trades", per_round["valid"] * args.rounds)
        # Last: their access tokens must not expire before they are used.
        create_requests = seed_in_parallel(
            seeder, "create_requests", per_round["create"] * args.rounds
        )
        log(f"  seeded in {time.monotonic() - t0:.0f} s")

        rounds: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {
            "create": [],
            "valid": [],
            "duplicate": [],
        }

        def alternate(name: str, slices: list[list[bytes]], expect: int, wrap: bool) -> None:
            for k, requests in enumerate(slices):
                floor = load.run(bare, expect=200, seconds=args.seconds, wrap=True)
                run = load.run(requests, expect=expect, seconds=args.seconds, wrap=wrap)
                rounds[name].append((floor, run))
                log(
                    f"  round {k + 1}: floor {floor['rate']:.0f}/s, {name} {run['rate']:.0f}/s "
                    f"({run['rate'] / floor['rate']:.1%}), errors {run['errors']}"
                    + (" EXHAUSTED" if run["exhausted_threads"] else "")
                    + (
                        f"; other processes used {run['cpu']['others_cores']:.2f} cores"
                        if run["cpu"]
                        else ""
                    )
                )

        def chunks(items: list[bytes], size: int) -> list[list[bytes]]:
            return [items[i * size : (i + 1) * size] for i in range(args.rounds)]

        log("order creation: bare / POST /api/v1/payments/ …")
        alternate("create", chunks(create_requests, per_round["create"]), 201, wrap=False)

        log("valid callbacks: bare / POST /api/v1/payments/notify/wechat/ …")
        signed_at = time.monotonic()
        valid = [notify_request(t) for t in trades]
        alternate("valid", chunks(valid, per_round["valid"]), 204, wrap=False)
        # The answers above only wrote the callbacks down; a payments worker
        # applies them (here: this process, timed, one after another).
        t0 = time.monotonic()
        applied_count = apply_received(limit=args.duplicate_pool)
        apply_rate = applied_count / max(time.monotonic() - t0, 1e-9)
        log(f"  applied {applied_count} received callbacks at {apply_rate:.0f}/s in one process")

        log("duplicate callbacks: the applied ones again …")
        paid = set(
            PaymentOrder.objects.filter(
                order_no__in=[t.order_no for t in trades], status="paid"
            ).values_list("order_no", flat=True)
        )
        again = [r for r, t in zip(valid, trades, strict=True) if t.order_no in paid]
        step = max(1, len(again) // args.rounds)
        alternate(
            "duplicate",
            [again[k * step :] + again[: k * step] for k in range(args.rounds)],
            204,
            wrap=True,
        )
        callback_age = time.monotonic() - signed_at

        # The books agree with what was sent: one charge per paid order, no more.
        charges = LedgerEntry.objects.filter(kind="charge").count()
        paid_orders = PaymentOrder.objects.filter(status="paid").count()
        outcomes = dict(NotifyLog.objects.values_list("outcome").annotate(n=Count("id")))
        web_errors = "\n".join(
            line
            for line in (work / "web.log").read_text().splitlines()
            if "[INFO]" not in line and "staticfiles" not in line and "mw_instance" not in line
        )[-3000:]
        throttle_bytes = sum(
            redis.Redis.from_url(redis_url).strlen(key)
            for key in redis.Redis.from_url(redis_url).scan_iter("*payments_notify*")
        )
    finally:
        running.close()
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        redis.Redis.from_url(redis_url).flushdb()
        shutil.rmtree(work, ignore_errors=True)

    report(
        args,
        sql=sql,
        timings=timings,
        profiles=profiles,
        rounds=rounds,
        dup_distinct=len(again),
        checks={
            "charges": charges,
            "paid_orders": paid_orders,
            "outcomes": outcomes,
            "callback_age": callback_age,
            "web_log": web_errors,
            "elapsed": time.monotonic() - started,
            "throttle_bytes": throttle_bytes,
            "tree": tree_state(),
            "apply_rate": apply_rate,
        },
    )
    failed = sum(run["errors"] + run["exhausted_threads"] for r in rounds.values() for _, run in r)
    return 1 if failed or charges != paid_orders else 0


def tree_state() -> str:
    """The commit measured, and the files changed on top of it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.split("\n")
    except OSError:
        return "unknown (no git)"
    files = [line[3:] for line in changed if line.strip()]
    return f"{head}" + (f" + uncommitted changes to {', '.join(files)}" if files else "")


def report(
    args: argparse.Namespace,
    *,
    sql: dict[str, tuple[list[str], int]],
    timings: dict[str, tuple[float, float]],
    profiles: dict[str, tuple[str, dict[str, float], dict[str, float]]],
    rounds: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]],
    dup_distinct: int,
    checks: dict[str, Any],
) -> None:
    titles = {
        "valid": "valid callback  POST /payments/notify/wechat/",
        "duplicate": "duplicate callback (already paid)",
        "create": "order creation  POST /payments/",
    }
    print()
    print("=" * 100)
    print(
        f"payments benchmark: gunicorn {args.workers} sync workers, DEBUG=0, PAYMENTS_SANDBOX=1, "
        f"PostgreSQL + Redis; wrk -t{args.wrk_threads} -c{args.connections} (every request "
        f"distinct); {os.cpu_count()} CPUs"
    )
    print(
        f"rate limits raised for the capacity run: "
        f"{', '.join(f'{k}={v}' for k, v in RAISED_RATES.items())} (default 6000/min per client)"
    )
    print(
        f"{args.rounds} alternating rounds (floor /bench/bare, then the endpoint) of "
        f"{args.seconds:g} s per figure; ratio = median of the per-round ratios"
    )

    print()
    print(
        "SQL per request (one request of each kind through Django's WSGI handler in this process, "
        "CaptureQueriesContext),"
    )
    print(
        f"and mean time per request in this process without profiler ({args.timed_requests} "
        "requests each):"
    )
    for name in ("bare", "valid", "duplicate", "create"):
        captured, outside = sql[name]
        statements = [describe_sql(s) for s in captured]
        wall, cpu = timings.get(name, (float("nan"), float("nan")))
        print(
            f"  {name:<10} {len(statements):>3} statements (BEGIN/COMMIT included)"
            + (f" + {outside} CONN_HEALTH_CHECKS SELECT 1" if outside else "")
            + f"; in process {wall:.2f} ms wall, {cpu:.2f} ms CPU per request"
        )
        for i, statement in enumerate(statements, 1):
            print(f"      {i:>2}. {statement}")

    if profiles:
        print()
        print(
            f"profile (pyinstrument, in process, {args.profile_requests} requests each; "
            "ms per request):"
        )
        for name, (_text, categories, functions) in profiles.items():
            total = sum(categories.values())
            print(f"  {name}: {total:.2f} ms/request")
            for category, ms in sorted(categories.items(), key=lambda kv: -kv[1]):
                print(f"      {category:<46} {ms:6.2f}  {ms / total:4.0%}")
            print("    inside (inclusive):")
            for function, ms in sorted(functions.items(), key=lambda kv: -kv[1]):
                print(f"      {function:<46} {ms:6.2f}  {ms / total:4.0%}")
        for name, (text, _, _) in profiles.items():
            print()
            print(f"--- pyinstrument tree, {name} (top) ---")
            lines = [line for line in text.splitlines() if line.strip()]
            print("\n".join(lines[:60]))

    print()
    print(
        "rounds: floor req/s / endpoint req/s (ratio); CPU ms per request of gunicorn, "
        "PostgreSQL (scratch database's backends), wrk; other processes' use of the machine"
    )
    for name, pairs in rounds.items():
        print(f"  {name}:")
        for k, (floor, run) in enumerate(pairs, 1):
            line = (
                f"    round {k}: {floor['rate']:6.0f} / {run['rate']:5.0f} "
                f"({run['rate'] / floor['rate']:4.1%})"
            )
            for label, result in (("floor", floor), (name, run)):
                cpu = result.get("cpu") or {}
                if cpu:
                    line += (
                        f" | {label}: web {cpu['web_ms']:.2f}, pg {cpu['postgres_ms']:.2f}, "
                        f"wrk {cpu['wrk_ms']:.2f}; others {cpu['others_cores']:.2f} cores"
                    )
            print(line)
    print()
    header = (
        f"{'path':<48}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'floor/s':>9}{'f p50':>7}{'f p99':>7}{'ratio':>7}{'goal':>6}  met?"
    )
    print(header)
    print("-" * len(header))
    for name in ("valid", "duplicate", "create"):
        pairs = rounds[name]
        ratios = [run["rate"] / floor["rate"] for floor, run in pairs]
        ratio = statistics.median(ratios)
        run = statistics.median([run["rate"] for _, run in pairs])
        floor = statistics.median([floor["rate"] for floor, _ in pairs])
        p50 = statistics.median([r["p50_ms"] for _, r in pairs])
        p99 = statistics.median([r["p99_ms"] for _, r in pairs])
        f50 = statistics.median([f["p50_ms"] for f, _ in pairs])
        f99 = statistics.median([f["p99_ms"] for f, _ in pairs])
        goal = GOALS[name]
        print(
            f"{titles[name]:<48}{run:>8.0f}{p50:>8.1f}{p99:>8.1f}{floor:>9.0f}{f50:>7.1f}{f99:>7.1f}"
            f"{ratio:>7.1%}{goal:>6.0%}  {'yes' if ratio >= goal else 'NO'}"
        )
    print("(req/s, latencies: medians over the rounds; floor: the bare rounds of the same figure)")
    print()
    errors = {name: sum(run["errors"] for _, run in pairs) for name, pairs in rounds.items()}
    exhausted = {
        name: sum(run["exhausted_threads"] for _, run in pairs) for name, pairs in rounds.items()
    }
    print(
        f"answers other than expected: {errors}; wrk threads that ran out of requests: {exhausted}"
    )
    print(
        f"duplicate rounds drew on {dup_distinct} applied callbacks (a round that needs more "
        f"starts over: a callback sent a third time is a duplicate too)"
    )
    print(
        f"books: {checks['paid_orders']} paid orders, {checks['charges']} charges "
        f"({'consistent' if checks['paid_orders'] == checks['charges'] else 'MISMATCH'}); "
        f"received callbacks applied by one worker process: {checks['apply_rate']:.0f}/s; "
        f"notify log outcomes {checks['outcomes']}; last callback used "
        f"{checks['callback_age']:.0f} s after signing (WeChat allows 300)"
    )
    print(
        f"NotifyThrottle's counters for 127.0.0.1 in Redis at the end: "
        f"{checks['throttle_bytes']} bytes (one INCR per callback, fixed windows)"
    )
    print(f"code measured: {checks['tree']}")
    print(f"total time {checks['elapsed']:.0f} s")
    log_tail = checks["web_log"].strip()
    if log_tail:
        print("gunicorn log (anything beyond its start-up lines):")
        print(log_tail)


if __name__ == "__main__":
    sys.exit(main())
