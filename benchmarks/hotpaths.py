"""The hot paths citizens and scanners feel, each next to the floor of the same run.

    .venv/bin/python benchmarks/hotpaths.py [--paths catalog,guide,...] [--profile]
        [--scanners 1]

The method (README "Performance"): the real stack on a scratch PostgreSQL
database and an empty Redis database, gunicorn with the production
settings (DEBUG=0) and 2 sync workers, load from ``wrk`` in another process
with 16 connections (``benchmarks/wrk_records.lua``: every request of a run
is sent once), the floor (``/bench/bare``, a bare Django JSON view behind
the same middleware) and the endpoint alternated A B A B, the median of the
per-round ratios quoted. The per-citizen and per-terminal rate limits are
raised for the capacity run (the output says which).

Paths, and what makes each request different:

- ``catalog``: ``GET /api/v1/services/``, the first page of the public
  catalog (the demo catalog: 45 services; the output says how many), no
  login; every app open asks it.
- ``guide``: ``GET /api/v1/services/{code}/``, round the demo's services.
- ``revalidate``: the first catalog page with the ``If-None-Match`` of its
  last answer (a mobile client or a CDN revalidating).
- ``issue``: ``GET /api/v1/me/star-code/``, each by a different real-name
  citizen with their own access token.
- ``verify``: ``POST /api/v1/qr/verify/`` by a scanner terminal, each with a
  star-code no scanner has seen (a different citizen's, its own ``jti``).
  The requests go round-robin over ``--scanners`` terminals, each with its
  own API key (default 1: every request then finds the key in the worker's
  scanner-auth cache, ``QR_SCANNER_AUTH_CACHE_SECONDS``); the output says
  how many. Every answer must say ``"valid":true`` (the endpoint answers
  200 for invalid and replayed codes too), and after each round the valid
  online scans on record must match the requests.
- ``submit``: ``POST /api/v1/applications/`` for a free service whose
  department registered no endpoint, each by a different citizen.
- ``submit-keyed``: the same, each with its own ``Idempotency-Key``, as
  the apps send every submit (docs/mobile.md): the key's record looked up,
  inserted and given the answer in the submit's transaction.

An answer with another status (or, for verify, without ``"valid":true``),
a socket error or a time-out is an error, in the floor's rounds as in the
endpoint's: the rates count expected answers only, the table has an errors
column, a figure with any error is marked INVALID, and the exit code is 1.

Before the load, one request of each is sent through the WSGI application
in this process and its SQL statements listed; ``--profile`` (needs
``pyinstrument``) profiles a batch of each in process and prints where the
time goes. Needs ``wrk`` (``apt-get install -y wrk``), PostgreSQL
(``BENCH_PG``) and Redis (``BENCH_REDIS``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from harness import (
    FORM,
    Pair,
    alternate,
    bench_service,
    count_queries,
    errors_cell,
    failures,
    log,
    medians,
    print_profiles,
    print_rounds,
    print_sql,
    profile,
    pyinstrument_available,
    raw_request,
    require_wrk,
    scratch_stack,
    served,
    time_in_process,
    tree_state,
    verdict,
    web_log_problems,
    wrk_seconds,
    wsgi_call,
)

RAISED_RATES = {
    "QR_VERIFY_RATE": "100000000/min",
    "QR_STAR_CODE_RATE": "100000000/min",
}
# Issued and signed codes must outlive the run.
EXTRA_ENV = {"STAR_CODE_TTL": "1800", "JWT_ACCESS_MINUTES": "60"}


# What every verify answer of the benchmark must contain (the compact JSON
# both the view and qr.fastpath answer with): the endpoint answers 200 for
# an invalid, replayed or expired code too.
VALID_SCAN = '"valid":true'


class HotPath:
    """One hot path: its title, goal, expected status (and a string the
    body must contain, if any), how to make ``n`` distinct requests of it,
    and what the server records of each (a count that must grow by one per
    request, if any)."""

    def __init__(
        self,
        title: str,
        goal: float,
        expect: int,
        make: Callable[[int], list[bytes]],
        *,
        cheap: bool = False,
        at_floor: bool = False,
        body: str | None = None,
        recorded: Callable[[], int] | None = None,
        recorded_what: str = "outcomes",
    ) -> None:
        self.title, self.goal, self.expect, self.make = title, goal, expect, make
        self.body, self.recorded, self.recorded_what = body, recorded, recorded_what
        # Requests cheap to make: sized for twice the floor's rate, so that
        # no round can run out whatever the endpoint does.
        self.cheap = cheap
        # Sized for at least the floor's rate: the in-process timing is of
        # cold requests (with many scanner keys, each key's first), far
        # slower than the load's, and a round sized by it ran out.
        self.at_floor = at_floor


class Seeder:
    """The demo catalog, a free service without endpoint, ``scanners``
    scanner terminals (each its own API key), and real-name citizens made in
    bulk (each used once per run)."""

    def __init__(self, scanners: int = 1) -> None:
        from django.core.management import call_command

        from accounts.api_keys import api_key_create
        from accounts.departments import department_ensure
        from accounts.models import ApiKeyScope
        from qr import keys
        from qr.models import ScannerProfile
        from services import selectors

        call_command("seed_demo", verbosity=0)
        self.codes = list(selectors.services_public().values_list("code", flat=True))
        department, _ = department_ensure(code="bench-free", name="基准测试部门")
        self.free = bench_service(code="bench-free", name="居住证明开具", department=department)
        metro, _ = department_ensure(code="bench-metro", name="长沙地铁")
        self.scanner_keys: list[str] = []
        for n in range(max(1, scanners)):
            key, raw = api_key_create(
                department=metro, scope=ApiKeyScope.SCANNER, name=f"闸机 {n + 1}"
            )
            ScannerProfile.objects.create(api_key=key, place=f"2号线 五一广场站 闸机 {n + 1}")
            self.scanner_keys.append(raw)
        self.scanner_key = self.scanner_keys[0]
        self.verifies = 0  # verify requests made so far: the round-robin goes on from there
        self.kid, self.private = keys.keyring_ensure()
        self.made = 0
        self.last_etag = ""

    def citizens(self, count: int) -> list[Any]:
        """``count`` new real-name citizens (bulk INSERT; the fields the
        real-name check would write, the ID number encrypted and indexed)."""
        from django.contrib.auth.hashers import make_password
        from django.utils import timezone

        from accounts import idnumber, pii
        from accounts.models import IdentityLevel, User

        start, self.made = self.made, self.made + count
        unusable, now = make_password(None), timezone.now()
        made = []
        for n in range(start, start + count):
            first17 = f"45{n // 1000:04d}19900307{n % 1000:03d}"  # apart from the demo's 43…
            number = first17 + idnumber.check_char(first17)
            made.append(
                User(
                    phone=f"137{n:08d}",
                    password=unusable,
                    identity_level=IdentityLevel.REAL_NAME,
                    real_name="张三丰",
                    id_number=number,
                    id_number_index=pii.blind_index(number, purpose="id_number"),
                    real_name_verified_at=now,
                )
            )
        return User.objects.bulk_create(made, batch_size=2000)

    @staticmethod
    def bearer(citizen: Any) -> dict[str, str]:
        """The access token a login gives (``accounts.tokens.tokens_issue``:
        it vouches for the citizen's subject and level)."""
        from accounts.tokens import tokens_issue

        return {"Authorization": f"Bearer {tokens_issue(user=citizen)['access']}"}

    # --- requests of each path

    def catalog(self, n: int) -> list[bytes]:
        return [raw_request("GET", "/api/v1/services/", {})] * n

    def guide(self, n: int) -> list[bytes]:
        return [
            raw_request("GET", f"/api/v1/services/{self.codes[i % len(self.codes)]}/", {})
            for i in range(n)
        ]

    def revalidate(self, n: int) -> list[bytes]:
        return [raw_request("GET", "/api/v1/services/", {"If-None-Match": self.last_etag})] * n

    def issue(self, n: int) -> list[bytes]:
        return [
            raw_request("GET", "/api/v1/me/star-code/", self.bearer(c)) for c in self.citizens(n)
        ]

    def verify(self, n: int) -> list[bytes]:
        from django.conf import settings

        from qr import codes

        now = int(time.time())
        first, self.verifies = self.verifies, self.verifies + n
        keys = self.scanner_keys
        return [
            raw_request(
                "POST",
                "/api/v1/qr/verify/",
                {
                    "Authorization": f"Api-Key {keys[(first + i) % len(keys)]}",
                    "Content-Type": "application/json",
                },
                json.dumps(
                    {
                        "code": codes.sign(
                            {
                                "iss": settings.QR_ISSUER,
                                "sub": citizen.subject,
                                "iat": now,
                                "exp": now + 1800,
                                "jti": f"bench{self.made:06d}{i:08d}",
                                "lvl": 2,
                                "knd": "citizen",
                            },
                            kid=self.kid,
                            private_key=self.private,
                        )
                    }
                ).encode(),
            )
            for i, citizen in enumerate(self.citizens(n))
        ]

    def submit(self, n: int, *, keyed: bool = False) -> list[bytes]:
        body = json.dumps({"service": self.free.code, "form": FORM}).encode()
        return [
            raw_request(
                "POST",
                "/api/v1/applications/",
                {
                    **self.bearer(c),
                    "Content-Type": "application/json",
                    **({"Idempotency-Key": f"submit-{uuid.uuid4()}"} if keyed else {}),
                },
                body,
            )
            for c in self.citizens(n)
        ]

    def submit_keyed(self, n: int) -> list[bytes]:
        return self.submit(n, keyed=True)


def valid_online_scans() -> int:
    """Valid online scans on record, once the recorder's buffer (Redis) has
    been moved into the database, as the beat task would."""
    from qr.models import ScanEvent
    from qr.recorders import get_recorder
    from qr.scans import scan_events_flush

    for _ in range(1000):
        if not get_recorder().pending():
            break
        scan_events_flush()
    return ScanEvent.objects.filter(valid=True, source=ScanEvent.Source.ONLINE).count()


def paths(seeder: Seeder) -> dict[str, HotPath]:
    return {
        "catalog": HotPath(
            "GET /api/v1/services/ (first page)", 0.50, 200, seeder.catalog, cheap=True
        ),
        "guide": HotPath("GET /api/v1/services/{code}/", 0.60, 200, seeder.guide, cheap=True),
        "revalidate": HotPath(
            "  the same, If-None-Match (304)", 0.50, 304, seeder.revalidate, cheap=True
        ),
        "issue": HotPath(
            "GET /api/v1/me/star-code/ (issuance)", 0.50, 200, seeder.issue, at_floor=True
        ),
        "verify": HotPath(
            "POST /api/v1/qr/verify/",
            0.80,
            200,
            seeder.verify,
            at_floor=True,
            body=VALID_SCAN,
            recorded=valid_online_scans,
            recorded_what="valid scans",
        ),
        "submit": HotPath("POST /api/v1/applications/ (free)", 0.20, 201, seeder.submit),
        "submit-keyed": HotPath(
            "  the same, with an Idempotency-Key", 0.20, 201, seeder.submit_keyed
        ),
    }


def catalog_etag() -> str:
    """The ETag the first catalog page answers with now (empty if none)."""
    from django.test import Client

    response = Client().get("/api/v1/services/", HTTP_HOST="127.0.0.1")
    return str(response.headers.get("ETag", ""))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--paths", default="catalog,guide,revalidate,issue,verify,submit")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each round")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds per figure")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--profile", action="store_true", help="profile in process")
    parser.add_argument("--profile-requests", type=int, default=200)
    parser.add_argument("--timed-requests", type=int, default=100)
    parser.add_argument(
        "--scanners",
        type=int,
        default=1,
        help="scanner terminals (API keys) the verify requests go round-robin over",
    )
    args = parser.parse_args()
    if args.scanners < 1:
        parser.error("--scanners must be at least 1")
    require_wrk()
    started = time.monotonic()
    chosen = args.paths.split(",")

    with ExitStack() as running:
        stack = running.enter_context(scratch_stack("hotpaths", **RAISED_RATES, **EXTRA_ENV))
        seeder = Seeder(scanners=args.scanners)
        table = paths(seeder)
        unknown = set(chosen) - set(table)
        if unknown:
            raise SystemExit(f"unknown paths: {', '.join(sorted(unknown))}")
        seeder.last_etag = catalog_etag()
        if "revalidate" in chosen and not seeder.last_etag:
            log("the catalog answers without an ETag: no revalidation figure")
            chosen.remove("revalidate")

        log("counting SQL statements per request in process …")
        bare = raw_request("GET", "/bench/bare", {})
        wsgi_call(bare)  # first-request setup out of the count
        sql = {"bare": count_queries(bare, 200)}
        timings = {"bare": time_in_process([bare] * args.timed_requests, 200)}
        for name in chosen:
            path = table[name]
            warm, probe = path.make(2)
            wsgi_call(warm)  # per-process set-up (keys, serializers) out of the count
            sql[name] = count_queries(probe, path.expect, body=path.body)
            timings[name] = time_in_process(
                path.make(args.timed_requests), path.expect, body=path.body
            )

        profiles: dict[str, tuple[str, dict[str, float], dict[str, float]]] = {}
        if args.profile and pyinstrument_available():
            log(f"profiling {args.profile_requests} requests of each path in process …")
            for name in chosen:
                path = table[name]
                profiles[name] = profile(
                    path.make(args.profile_requests), path.expect, body=path.body
                )

        load = running.enter_context(
            served(
                stack,
                workers=args.workers,
                connections=args.connections,
                threads=args.wrk_threads,
            )
        )
        bare_records = [raw_request("GET", "/bench/bare", {})] * (
            args.wrk_threads * args.connections
        )
        floor_rate = load.run(bare_records, expect=200, seconds=2, wrap=True, body='"ok"')["rate"]
        rounds: dict[str, list[Pair]] = {}
        for name in chosen:
            path = table[name]
            # Enough distinct requests that no round runs out: from a warm-up
            # rate, or what the workers could do at the in-process CPU time.
            warm = load.run(
                path.make(max(200, args.connections * 20)),
                expect=path.expect,
                seconds=2,
                body=path.body,
            )
            rate = max(warm["rate"], args.workers * 1000 / max(timings[name][1], 0.05))
            if path.cheap:
                # Kept pages answer faster than the floor (1.2 to 1.4 times
                # here): sized from the floor alone, a round ran out.
                rate = max(rate, 2 * floor_rate)
            elif path.at_floor:
                rate = max(rate, floor_rate)
            per_round = math.ceil(rate * args.seconds * 1.5) + 50
            log(f"{name}: {path.title} — warm-up {warm['rate']:.0f}/s; {per_round} per round …")
            requests = path.make(per_round * args.rounds)
            slices = [requests[k * per_round : (k + 1) * per_round] for k in range(args.rounds)]
            rounds[name] = alternate(
                load,
                name,
                slices,
                expect=path.expect,
                seconds=args.seconds,
                body=path.body,
                recorded=path.recorded,
                recorded_what=path.recorded_what,
            )
        web_errors = web_log_problems(stack)

    report(args, seeder, table, chosen, sql, timings, profiles, rounds, web_errors, started)
    return 1 if failures(rounds) or stack.redis_lost else 0


def report(
    args: argparse.Namespace,
    seeder: Seeder,
    table: dict[str, HotPath],
    chosen: list[str],
    sql: dict[str, tuple[list[str], int]],
    timings: dict[str, tuple[float, float]],
    profiles: dict[str, tuple[str, dict[str, float], dict[str, float]]],
    rounds: dict[str, list[Pair]],
    web_errors: str,
    started: float,
) -> None:
    print()
    print("=" * 100)
    print(
        f"hot paths: gunicorn {args.workers} sync workers, DEBUG=0, PostgreSQL + Redis; "
        f"wrk -t{args.wrk_threads} -c{args.connections} from another process (every request "
        f"distinct); {os.cpu_count()} CPUs"
    )
    print(
        "rate limits raised for the capacity run: "
        + ", ".join(f"{k}={v}" for k, v in RAISED_RATES.items())
        + f"; {', '.join(f'{k}={v}' for k, v in EXTRA_ENV.items())} so that codes and tokens "
        "made up front outlive the run"
    )
    print(
        f"{args.rounds} alternating rounds (floor /bench/bare, then the endpoint) of "
        f"{wrk_seconds(args.seconds)} s per path; ratio = median of the per-round ratios"
    )
    print(
        f"demo catalog: {len(seeder.codes)} services; verify: {len(seeder.scanner_keys)} scanner "
        f"API key(s), requests round-robin over them; every verify answer must contain "
        f"{VALID_SCAN} and the valid online scans on record must match the requests each round"
    )
    print()
    print("SQL per request (one request through the WSGI application in this process):")
    print_sql(sql, timings)
    if profiles:
        print()
        print(
            f"profile (pyinstrument, in process, {args.profile_requests} requests each; ms/request):"
        )
        print_profiles(profiles, tree_lines=45)
    print()
    print_rounds(rounds)
    print()
    header = (
        f"{'path':<42}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'floor/s':>9}"
        f"{'web ms':>8}{'pg ms':>7}{'errors':>8}{'ratio':>7}{'goal':>6}  met?"
    )
    print(header)
    print("-" * len(header))
    for name in chosen:
        if name not in rounds:
            continue
        m = medians(rounds[name])
        goal = table[name].goal
        print(
            f"{table[name].title:<42}{m['rate']:>8.0f}{m['p50']:>8.1f}{m['p99']:>8.1f}"
            f"{m['floor']:>9.0f}{m['web_ms']:>8.2f}{m['pg_ms']:>7.2f}"
            f"{errors_cell(m):>8}{m['ratio']:>7.1%}{goal:>6.0%}  {verdict(m, goal)}"
        )
    print(
        "(medians over the rounds, rates of expected answers only; web ms / pg ms: CPU per "
        "request of gunicorn and of PostgreSQL's backends; errors: endpoint+floor over all "
        "rounds, and record mismatches; INVALID: a figure with any error, mismatch or "
        "exhausted wrk thread, not to be quoted)"
    )
    print(f"code measured: {tree_state()}")
    print(f"total time {time.monotonic() - started:.0f} s")
    if web_errors.strip():
        print("gunicorn log (beyond its start-up lines):")
        print(web_errors.strip())


if __name__ == "__main__":
    sys.exit(main())
