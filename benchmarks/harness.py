"""What every HTTP benchmark here shares: a scratch stack, requests sent by
``wrk`` from another process, the same requests through the WSGI application
in this process (SQL statements, CPU time, profile), CPU accounting, and the
alternated floor/endpoint rounds with the median ratio.

The method (README "Benchmarks"): gunicorn with 2 sync workers, DEBUG=0,
PostgreSQL + Redis, ``wrk`` with 16 connections in another process, every
request different (``wrk_records.lua`` sends each record once), the floor
(``/bench/bare``, a bare Django JSON view on the same server) and the
endpoint alternated A B A B, the median of the per-round ratios quoted.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RECORDS_LUA = ROOT / "benchmarks" / "wrk_records.lua"
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
BARE = "/bench/bare"
# The form every benchmark's service asks for, and a filled one.
FORM = {"reason": "首次申领", "phone": "13800138000"}


def bench_service(*, code: str, name: str, department: Any, fee_fen: int = 0) -> Any:
    """A live service of ``department`` with a two-field form
    (``services.catalog.service_create``), in a category of its own."""
    from services.catalog import category_ensure, service_create

    return service_create(
        code=code,
        department=department,
        actor=None,
        name=name,
        category=category_ensure(code="bench", name="基准"),
        channels=["online"],
        identity_level=1,
        fee_fen=fee_fen,
        form_schema={
            "type": "object",
            "required": ["reason", "phone"],
            "properties": {
                "reason": {"type": "string", "minLength": 2},
                "phone": {"type": "string", "pattern": "^1[3-9]\\d{9}$"},
            },
        },
    )


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# The key a run writes (SET NX) into the Redis database it takes, so that two
# runs at once never take the same one; a run that dies without cleaning up
# leaves it for a day at most.
CLAIM_KEY = "mcs-bench:claimed-by"
CLAIM_SECONDS = 24 * 3600
# Flush the database only while it is still ours (a script: one step).
_FLUSH_IF_OURS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('FLUSHDB')
  return 1
end
return 0
"""


def free_redis_db(token: str) -> int:
    """An empty Redis database between 15 and 10 (or the one
    ``BENCH_REDIS_DB`` names), claimed for this run: ``CLAIM_KEY`` is set to
    ``token`` only if absent (SET NX), and the database kept only if that
    key is all it holds. Someone who does not claim (a test run flushing
    its database) can still take it: the end of the run says so."""
    import redis

    pinned = os.environ.get("BENCH_REDIS_DB")
    for number in [int(pinned)] if pinned else range(15, 9, -1):
        client = redis.Redis.from_url(f"{REDIS}/{number}")
        if client.dbsize() != 0 or not client.set(CLAIM_KEY, token, nx=True, ex=CLAIM_SECONDS):
            continue
        if client.dbsize() == 1:
            return number
        # Someone else wrote there between our two looks: give it back.
        client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end "
            "return 0",
            1,
            CLAIM_KEY,
            token,
        )
    raise SystemExit(
        f"no empty Redis database {'of BENCH_REDIS_DB' if pinned else 'between 10 and 15'} "
        "(another run may hold it)"
    )


def redis_release(url: str, token: str) -> bool:
    """Flush the run's Redis database if it is still claimed by ``token``;
    whether it was."""
    import redis

    return bool(redis.Redis.from_url(url).eval(_FLUSH_IF_OURS, 1, CLAIM_KEY, token))


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
    """``wrk`` runs of ``wrk_records.lua`` against one server."""

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
        self,
        requests: list[bytes],
        *,
        expect: int,
        seconds: float,
        wrap: bool = False,
        body: str | None = None,
    ) -> dict[str, Any]:
        """One wrk run. An answer counts as expected when its status is
        ``expect`` and, if ``body`` is given, its body contains ``body``;
        ``rate`` counts only the expected ones, ``errors`` everything else
        (other answers, socket errors, time-outs)."""
        if len(requests) < self.threads:
            raise ValueError(f"{len(requests)} requests for {self.threads} wrk threads")
        self.files += 1
        path = write_records(self.work / f"requests-{self.files}.bin", requests)
        argv = [
            self.binary,
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{wrk_seconds(seconds)}s",
            "--timeout",
            "30s",
            "-s",
            str(RECORDS_LUA),
            self.base,
            "--",
            str(path),
            str(expect),
            str(self.threads),
            "wrap" if wrap else "once",
            body or "",
        ]
        before = self.meter.read() if self.meter else {}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
        after = self.meter.read() if self.meter else {}
        path.unlink()
        match = re.search(r"^WRK-RESULT (\{.*\})$", done.stdout, re.MULTILINE)
        if done.returncode != 0 or match is None:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        result: dict[str, Any] = json.loads(match.group(1))
        # Only the expected answers are throughput; the rest are errors.
        result["rate"] = result["ok"] / (result["duration_us"] / 1e6)
        result["p50_ms"] = result["p50_us"] / 1000
        result["p99_ms"] = result["p99_us"] / 1000
        result["errors"] = result["unexpected"] + sum(
            result[k] for k in ("connect", "read", "write", "timeout")
        )
        result["stderr"] = done.stderr.strip()
        result["cpu"] = CpuMeter.delta(before, after, result["requests"]) if self.meter else {}
        result["problems"] = []
        return result


def wrk_seconds(seconds: float) -> int:
    """wrk takes whole seconds only (``-d2.5s`` is refused): the nearest, at least 1."""
    return max(1, round(seconds))


def wsgi_call(request: bytes, *, body: str | None = None) -> int:
    """Send one raw request through the WSGI application gunicorn serves
    (``config.wsgi``: the fast paths, then Django's handler with all its
    middleware) in this process; the HTTP status. With ``body``, an answer
    whose body does not contain it raises RuntimeError."""
    import io
    from urllib.parse import urlsplit

    head, _, payload = request.partition(b"\r\n\r\n")
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
        "wsgi.input": io.BytesIO(payload),
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
    answer = b"".join(response)
    if hasattr(response, "close"):
        response.close()
    if body is not None and body.encode() not in answer:
        raise RuntimeError(f"in-process answer without {body}: {answer[:300]!r}")
    return int(status[0].split()[0])


def count_queries(request: bytes, expect: int, *, body: str | None = None) -> tuple[list[str], int]:
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
            status = wsgi_call(request, body=body)
    finally:
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    if status != expect:
        raise RuntimeError(f"in-process request answered {status}, not {expect}")
    statements = [query["sql"] for query in captured.captured_queries]
    # BEGIN/COMMIT/ROLLBACK are psycopg's own commands, not cursor executes.
    through_cursor = [s for s in statements if s not in ("BEGIN", "COMMIT", "ROLLBACK")]
    return statements, len(seen) - len(through_cursor)


def time_in_process(
    requests: list[bytes], expect: int, *, body: str | None = None
) -> tuple[float, float]:
    """Mean wall and CPU milliseconds per request, in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    for request in requests:
        status = wsgi_call(request, body=body)
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
        what = "COUNT " if re.match(r"SELECT COUNT\(", text) else ""
        if "MIN(" in text and "MAX(" in text:
            what = "MIN/MAX "
        elif "DATE_TRUNC" in text.upper() and "DISTINCT" in text:
            what = "DISTINCT dates "
        lock = " FOR UPDATE" if "FOR UPDATE" in text else ""
        return f"SELECT {what}{', '.join(dict.fromkeys(tables)) or text[7:40]}{lock}"
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
        "cryptography (RSA, Ed25519, AES-GCM, Fernet)",
        lambda path, cls: (
            "/cryptography/" in path or cls.startswith(("RSA", "AESGCM", "Fernet", "Ed25519"))
        ),
    ),
    ("PostgreSQL round trips (psycopg)", lambda path, cls: "/psycopg/" in path),
    ("Redis round trips", lambda path, cls: "/redis/" in path),
    ("ORM: compiling queries, making objects", lambda path, cls: "/django/db/" in path),
    (
        "DRF (views, serializers, auth, JWT)",
        lambda path, cls: "/rest_framework" in path or "/jwt/" in path,
    ),
    ("JSON Schema validation", lambda path, cls: "/jsonschema" in path or "/referencing/" in path),
    (
        "i18n (translations)",
        lambda path, cls: "/django/utils/translation/" in path or "/gettext" in path,
    ),
    ("httpx", lambda path, cls: "/httpx/" in path),
    ("project code", lambda path, cls: str(ROOT) in path and "/.venv/" not in path),
    ("Django request/response, middleware", lambda path, cls: "/django/" in path),
]


def profile(
    requests: list[bytes],
    expect: int,
    *,
    categories: list[tuple[str, Callable[[str, str], bool]]] | None = None,
    watched: Iterable[tuple[str, str]] = (),
    body: str | None = None,
) -> tuple[str, dict[str, float], dict[str, float]]:
    """pyinstrument over ``requests`` sent in this process: the tree's top,
    self time by category, and time inside some functions (per request, ms)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    for request in requests:
        try:
            status = wsgi_call(request, body=body)
        except RuntimeError:
            profiler.stop()
            raise
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
                for cls, function in watched
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
                found = next(
                    (name for name, test in (categories or CATEGORIES) if test(path, cls)), None
                )
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


# --- The scratch stack ----------------------------------------------------------------------


class Stack:
    """A scratch PostgreSQL database, an empty Redis database and a work
    directory, with the production settings (DEBUG=0) pointed at them."""

    def __init__(self, name: str, extra_env: dict[str, str]) -> None:
        from cryptography.fernet import Fernet

        self.database = f"mcs_bench_{name}_{os.getpid()}"
        self.redis_token = f"{name}-{os.getpid()}-{secrets.token_hex(8)}"
        self.redis_url = f"{REDIS}/{free_redis_db(self.redis_token)}"
        # Set at the end: the Redis database was flushed or taken by someone
        # else during the run (its figures cannot be trusted).
        self.redis_lost = False
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.env = {
            "DJANGO_SETTINGS_MODULE": "config.settings.base",
            "DATABASE_URL": f"{PG}/{self.database}",
            "REDIS_URL": self.redis_url,
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "BLIND_INDEX_KEY": secrets.token_urlsafe(30),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "SMS_BACKEND": "file",
            "SMS_FILE_PATH": str(self.work / "sms.jsonl"),
            # Named: production takes no identity bureau by default.
            "IDENTITY_PROVIDER": "accounts.identity.SandboxIdentityProvider",
            "BENCHMARK_VIEWS": "1",
            **extra_env,
        }


@contextmanager
def scratch_stack(name: str, **extra_env: str) -> Iterator[Stack]:
    """Create the stack, set its environment in this process, set Django up
    and migrate; drop the database, flush Redis (if the database is still
    claimed by this run) and remove the work directory at the end, however
    it ends."""
    import psycopg

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    # A kill or Ctrl-C cleans up too, even where the shell started us with
    # SIGINT ignored.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = Stack(name, extra_env)
    os.environ.update(stack.env)
    sys.path.insert(0, str(ROOT))
    # WhiteNoise warns that collectstatic has not run; nothing here serves static files.
    warnings.filterwarnings("ignore", message="No directory at")
    try:
        # Inside: a database that cannot be made still gives back the Redis
        # claim (left, it would keep that database from every run for a day).
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{stack.database}"')
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        yield stack
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{stack.database}" WITH (FORCE)')
        if not redis_release(stack.redis_url, stack.redis_token):
            stack.redis_lost = True
            log(
                f"Redis {stack.redis_url} is no longer claimed by this run (flushed or taken by "
                "someone else meanwhile): not flushed; the run fails"
            )
        shutil.rmtree(stack.work, ignore_errors=True)


@contextmanager
def served(stack: Stack, *, workers: int, connections: int, threads: int) -> Iterator[Wrk]:
    """gunicorn (``tests.processes.web_server``: the production settings,
    no access log, ``workers`` sync workers) on the stack, and a ``Wrk``
    aimed at it that meters CPU."""
    from django.db import connections as db_connections

    from tests.processes import web_server

    db_connections.close_all()  # forked children must not share this process's
    with web_server(workers=workers, log=stack.work / "web.log", **stack.env) as base:
        meter = CpuMeter(int(base.rsplit(":", 1)[1]), stack.database)
        yield Wrk(base, connections=connections, threads=threads, work=stack.work, meter=meter)


def web_log_problems(stack: Stack) -> str:
    """The web server's log beyond its start-up lines (the last 3000 characters)."""
    path = stack.work / "web.log"
    if not path.exists():
        return ""
    return "\n".join(
        line
        for line in path.read_text().splitlines()
        if "[INFO]" not in line and "staticfiles" not in line and "mw_instance" not in line
    )[-3000:]


# --- Alternated rounds and their summary ---------------------------------------------------

Pair = tuple[dict[str, Any], dict[str, Any]]


def settled(count: Callable[[], int], *, quiet: float = 0.2, timeout: float = 10.0) -> int:
    """``count()`` once it has stopped moving for ``quiet`` seconds (the
    server may still be finishing requests wrk sent just before it stopped)."""
    deadline = time.monotonic() + timeout
    last = count()
    while True:
        time.sleep(quiet)
        now = count()
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def check_recorded(run: dict[str, Any], recorded: int, what: str) -> None:
    """The server's own record of a run against wrk's answers: ``recorded``
    outcomes of the kind every request should have had (``what``) must be
    at least the expected answers and at most the requests sent (those
    still in flight when wrk stopped may or may not have been served).
    A mismatch goes into ``run["problems"]``, making the figure invalid."""
    run["recorded"] = recorded
    if not run["ok"] <= recorded <= run["sent"]:
        run["problems"].append(
            f"{recorded} {what} on record for {run['ok']} expected answers "
            f"of {run['sent']} requests sent"
        )


def invalid(result: dict[str, Any]) -> bool:
    """A run whose figure cannot be quoted: errors (answers other than
    expected, socket errors), or the server's record disagreeing."""
    return bool(result["errors"] or result["problems"])


def alternate(
    load: Wrk,
    name: str,
    slices: list[list[bytes]],
    *,
    expect: int,
    seconds: float,
    wrap: bool = False,
    body: str | None = None,
    recorded: Callable[[], int] | None = None,
    recorded_what: str = "outcomes",
) -> list[Pair]:
    """For each slice: a floor round (``/bench/bare``), then the endpoint's
    round on that slice's requests; the (floor, endpoint) results.

    ``body``: a string every endpoint answer must contain (a wrong answer
    with the right status is an error). ``recorded``: counts the outcomes
    the server has recorded that every request of the round should have
    (read before and after each round; see :func:`check_recorded`)."""
    bare = [raw_request("GET", BARE, {})] * (load.threads * load.connections)
    pairs: list[Pair] = []
    for k, requests in enumerate(slices):
        floor = load.run(bare, expect=200, seconds=seconds, wrap=True, body='"ok"')
        before = settled(recorded) if recorded else 0
        run = load.run(requests, expect=expect, seconds=seconds, wrap=wrap, body=body)
        if recorded:
            check_recorded(run, settled(recorded) - before, recorded_what)
        pairs.append((floor, run))
        log(
            f"  round {k + 1}: floor {floor['rate']:.0f}/s, {name} {run['rate']:.0f}/s "
            f"({run['rate'] / floor['rate']:.1%}), errors {run['errors']}"
            + (f", floor errors {floor['errors']}" if floor["errors"] else "")
            + (f", {run['recorded']} {recorded_what} on record" if recorded else "")
            + (" EXHAUSTED" if run["exhausted_threads"] else "")
            + "".join(f"; MISMATCH: {problem}" for problem in run["problems"])
            + (
                f"; other processes used {run['cpu']['others_cores']:.2f} cores"
                if run["cpu"]
                else ""
            )
        )
    return pairs


def medians(pairs: list[Pair]) -> dict[str, Any]:
    """The figure of a series of rounds: medians of the per-round ratio, the
    endpoint's and the floor's rates (expected answers only) and latencies,
    CPU per request; errors of the endpoint's and of the floor's rounds, and
    whether the figure is invalid (any error, record mismatch or thread
    that ran out of requests, in either)."""

    def med(values: Iterable[float]) -> float:
        listed = list(values)
        return statistics.median(listed) if listed else float("nan")

    return {
        "ratio": med(run["rate"] / floor["rate"] for floor, run in pairs),
        "rate": med(run["rate"] for _, run in pairs),
        "p50": med(run["p50_ms"] for _, run in pairs),
        "p99": med(run["p99_ms"] for _, run in pairs),
        "floor": med(floor["rate"] for floor, _ in pairs),
        "floor_p50": med(floor["p50_ms"] for floor, _ in pairs),
        "floor_p99": med(floor["p99_ms"] for floor, _ in pairs),
        "web_ms": med(run["cpu"].get("web_ms", float("nan")) for _, run in pairs),
        "pg_ms": med(run["cpu"].get("postgres_ms", float("nan")) for _, run in pairs),
        "floor_web_ms": med(floor["cpu"].get("web_ms", float("nan")) for floor, _ in pairs),
        "errors": sum(run["errors"] for _, run in pairs),
        "floor_errors": sum(floor["errors"] for floor, _ in pairs),
        "mismatches": sum(len(run["problems"]) for _, run in pairs),
        "exhausted": sum(run["exhausted_threads"] for _, run in pairs),
        "invalid": any(
            invalid(floor) or invalid(run) or run["exhausted_threads"] for floor, run in pairs
        ),
    }


def failures(rounds: dict[str, list[Pair]]) -> int:
    """How many runs (floor or endpoint) of these rounds make a figure
    invalid: the exit code of a benchmark is non-zero if any."""
    return sum(
        invalid(floor) + invalid(run) + bool(run["exhausted_threads"])
        for pairs in rounds.values()
        for floor, run in pairs
    )


def errors_cell(m: dict[str, Any]) -> str:
    """The table's errors column: endpoint+floor errors, and record mismatches."""
    cell = f"{m['errors']}+{m['floor_errors']}"
    return cell + (f" m{m['mismatches']}" if m["mismatches"] else "")


def verdict(m: dict[str, Any], goal: float) -> str:
    """The "met?" column: INVALID when the figure cannot be quoted."""
    if m["invalid"]:
        return "INVALID"
    return "yes" if m["ratio"] >= goal else "NO"


def print_rounds(rounds: dict[str, list[Pair]]) -> None:
    print(
        "rounds: floor req/s / endpoint req/s (expected answers only; ratio), errors floor / "
        "endpoint; CPU ms per request of gunicorn, PostgreSQL (scratch database's backends), "
        "wrk; other processes' use of the machine"
    )
    for name, pairs in rounds.items():
        print(f"  {name}:")
        for k, (floor, run) in enumerate(pairs, 1):
            line = (
                f"    round {k}: {floor['rate']:6.0f} / {run['rate']:5.0f} "
                f"({run['rate'] / floor['rate']:4.1%})"
                f" errors {floor['errors']} / {run['errors']}"
                + (
                    f", {run['recorded']} on record of {run['sent']} sent"
                    if "recorded" in run
                    else ""
                )
                + (" INVALID" if invalid(floor) or invalid(run) else "")
            )
            for label, result in (("floor", floor), (name, run)):
                cpu = result.get("cpu") or {}
                if cpu:
                    line += (
                        f" | {label}: web {cpu['web_ms']:.2f}, pg {cpu['postgres_ms']:.2f}, "
                        f"wrk {cpu['wrk_ms']:.2f}; others {cpu['others_cores']:.2f} cores"
                    )
            print(line)
            for problem in run["problems"]:
                print(f"      MISMATCH: {problem}")


def print_sql(
    sql: dict[str, tuple[list[str], int]], timings: dict[str, tuple[float, float]]
) -> None:
    for name, (captured, outside) in sql.items():
        statements = [describe_sql(s) for s in captured]
        wall, cpu = timings.get(name, (float("nan"), float("nan")))
        print(
            f"  {name:<12} {len(statements):>3} statements (BEGIN/COMMIT included)"
            + (f" + {outside} CONN_HEALTH_CHECKS SELECT 1" if outside else "")
            + f"; in process {wall:.2f} ms wall, {cpu:.2f} ms CPU per request"
        )
        for i, statement in enumerate(statements, 1):
            print(f"      {i:>2}. {statement}")


def print_profiles(
    profiles: dict[str, tuple[str, dict[str, float], dict[str, float]]], tree_lines: int = 50
) -> None:
    for name, (_text, categories, functions) in profiles.items():
        total = sum(categories.values())
        print(f"  {name}: {total:.2f} ms/request")
        for category, ms in sorted(categories.items(), key=lambda kv: -kv[1]):
            print(f"      {category:<46} {ms:6.2f}  {ms / total:4.0%}")
        if functions:
            print("    inside (inclusive):")
            for function, ms in sorted(functions.items(), key=lambda kv: -kv[1]):
                print(f"      {function:<46} {ms:6.2f}  {ms / total:4.0%}")
    for name, (text, _, _) in profiles.items():
        print()
        print(f"--- pyinstrument tree, {name} (top) ---")
        lines = [line for line in text.splitlines() if line.strip()]
        print("\n".join(lines[:tree_lines]))


def pyinstrument_available() -> bool:
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        print("--profile: pyinstrument is not importable (make install); no profile")
        return False
    return True


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed. Install it (Debian/Ubuntu: `sudo apt-get install -y wrk`; "
            "macOS: `brew install wrk`) and run again."
        )
