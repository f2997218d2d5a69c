"""Payments figures, each next to the floor (``/bench/bare``) of the same run.

    .venv/bin/python benchmarks/payments.py [--seconds 5] [--rounds 3] [--profile]

Runs the real stack on a scratch PostgreSQL database and an empty Redis
database: gunicorn (production settings, DEBUG=0, the payments sandbox on,
2 sync workers), load from ``wrk`` in another process (16 connections) with
``benchmarks/wrk_records.lua``, which sends every request of a run once:

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
median of the per-round ratios. A callback is answered 204 whether it was
accepted, a duplicate or ignored, so the status alone proves little: after
each round the callbacks waiting in the Redis inbox are moved into
``NotifyLog`` rows (as a payments worker's drain does) and the round's new
rows must all have the outcome the round is about (``received`` for valid
callbacks, ``duplicate`` for duplicates), as many as the expected answers
(and no more than the requests sent); order creations must each have made
an order. Any answer other than expected, in the floor's rounds as in the
endpoint's, or a mismatch marks the figure INVALID and makes the exit code 1;
the rates count expected answers only. Throttles are raised for the run
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
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import (
    FORM,
    ROOT,
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

CHANNEL = "wechat"
FEE_FEN = 2000
NOTIFY_PATH = f"/api/v1/payments/notify/{CHANNEL}/"
CREATE_PATH = "/api/v1/payments/"
RAISED_RATES = {"PAYMENTS_NOTIFY_RATE": "100000000/min"}
GOALS = {"valid": 0.50, "duplicate": 0.50, "create": 0.20}


# --- Seeding through the real code --------------------------------------------------------------


class Seeder:
    """Citizens, their applications and orders, made with the project's own functions."""

    def __init__(self) -> None:
        from accounts.departments import department_ensure

        department, _ = department_ensure(code="bench-pay", name="基准测试部门")
        self.service = bench_service(
            code="bench-fee", name="居民身份证换领", department=department, fee_fen=FEE_FEN
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


class Outcomes:
    """Counts of ``NotifyLog`` rows of one outcome, after moving what waits
    in the Redis inbox into rows (``payments.notifications.notifies_collect``,
    the first half of a worker's drain; timed, to add to the apply rate)."""

    def __init__(self) -> None:
        self.moved, self.moving = 0, 0.0

    def collect(self) -> None:
        from payments import notifications

        t0 = time.monotonic()
        while moved := notifications.notifies_collect(limit=2000):
            self.moved += moved
        self.moving += time.monotonic() - t0

    def counter(self, outcome: str) -> Callable[[], int]:
        from payments.models import NotifyLog

        def count() -> int:
            self.collect()
            return NotifyLog.objects.filter(outcome=outcome).count()

        return count


def orders_made() -> int:
    from payments.models import PaymentOrder

    return PaymentOrder.objects.count()


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
    require_wrk()
    started = time.monotonic()
    keys = Path(tempfile.mkdtemp(prefix="bench-payments-keys-"))
    running = ExitStack()
    running.callback(shutil.rmtree, keys, ignore_errors=True)
    try:
        # DEBUG=0 turns the sandbox off unless asked for; every process of the
        # run (this one seeds and signs, gunicorn checks) shares its keys.
        stack = running.enter_context(
            scratch_stack(
                "payments",
                PAYMENTS_SANDBOX="1",
                PAYMENTS_SANDBOX_KEY_DIR=str(keys),
                **RAISED_RATES,
            )
        )
        redis_url = stack.redis_url
        import redis
        from django.db.models import Count

        from payments.models import LedgerEntry, NotifyLog, PaymentOrder

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
        if args.profile and pyinstrument_available():
            log(f"profiling {args.profile_requests} requests of each kind in process …")
            n = args.profile_requests
            valid = [notify_request(t) for t in seeder.paid_trades(n)]
            watch = {"categories": CATEGORIES, "watched": WATCHED}
            profiles["valid"] = profile(valid, 204, **watch)
            apply_received()
            profiles["duplicate"] = profile(valid, 204, **watch)
            profiles["create"] = profile(seeder.create_requests(n), 201, **watch)

        # --- The server, warmed up; rough rates size the pools.
        load = running.enter_context(
            served(
                stack, workers=args.workers, connections=args.connections, threads=args.wrk_threads
            )
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

        rounds: dict[str, list[Pair]] = {}

        def chunks(items: list[bytes], size: int) -> list[list[bytes]]:
            return [items[i * size : (i + 1) * size] for i in range(args.rounds)]

        log("order creation: bare / POST /api/v1/payments/ …")
        rounds["create"] = alternate(
            load,
            "create",
            chunks(create_requests, per_round["create"]),
            expect=201,
            seconds=args.seconds,
            recorded=orders_made,
            recorded_what="orders",
        )

        log("valid callbacks: bare / POST /api/v1/payments/notify/wechat/ …")
        outcomes_seen = Outcomes()
        outcomes_seen.collect()  # whatever waits from the warm-up: out of the count and the time
        outcomes_seen.moved, outcomes_seen.moving = 0, 0.0
        signed_at = time.monotonic()
        valid = [notify_request(t) for t in trades]
        rounds["valid"] = alternate(
            load,
            "valid",
            chunks(valid, per_round["valid"]),
            expect=204,
            seconds=args.seconds,
            recorded=outcomes_seen.counter("received"),
            recorded_what="received callbacks",
        )
        # The answers above only wrote the callbacks down (and the checks
        # moved them from the inbox into rows, timed); a payments worker
        # applies them (here: this process, timed, one after another).
        move_seconds = outcomes_seen.moving / max(outcomes_seen.moved, 1)
        t0 = time.monotonic()
        applied_count = apply_received(limit=args.duplicate_pool)
        apply_seconds = time.monotonic() - t0
        apply_rate = applied_count / max(apply_seconds + applied_count * move_seconds, 1e-9)
        log(
            f"  applied {applied_count} received callbacks at {apply_rate:.0f}/s in one process "
            f"(moving them from the inbox included: {outcomes_seen.moved} moved at "
            f"{1 / max(move_seconds, 1e-9):.0f}/s)"
        )

        log("duplicate callbacks: the applied ones again …")
        paid = set(
            PaymentOrder.objects.filter(
                order_no__in=[t.order_no for t in trades], status="paid"
            ).values_list("order_no", flat=True)
        )
        again = [r for r, t in zip(valid, trades, strict=True) if t.order_no in paid]
        step = max(1, len(again) // args.rounds)
        rounds["duplicate"] = alternate(
            load,
            "duplicate",
            [again[k * step :] + again[: k * step] for k in range(args.rounds)],
            expect=204,
            seconds=args.seconds,
            wrap=True,
            recorded=outcomes_seen.counter("duplicate"),
            recorded_what="duplicate callbacks",
        )
        callback_age = time.monotonic() - signed_at

        # The books agree with what was sent: one charge per paid order, no more.
        charges = LedgerEntry.objects.filter(kind="charge").count()
        paid_orders = PaymentOrder.objects.filter(status="paid").count()
        outcomes = dict(NotifyLog.objects.values_list("outcome").annotate(n=Count("id")))
        web_errors = web_log_problems(stack)
        throttle_bytes = sum(
            redis.Redis.from_url(redis_url).strlen(key)
            for key in redis.Redis.from_url(redis_url).scan_iter("*payments_notify*")
        )
    finally:
        running.close()

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
    return 1 if failures(rounds) or charges != paid_orders or stack.redis_lost else 0


def report(
    args: argparse.Namespace,
    *,
    sql: dict[str, tuple[list[str], int]],
    timings: dict[str, tuple[float, float]],
    profiles: dict[str, tuple[str, dict[str, float], dict[str, float]]],
    rounds: dict[str, list[Pair]],
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
        f"{wrk_seconds(args.seconds)} s per figure; ratio = median of the per-round ratios"
    )
    print(
        "checked each round: the status (204, 201), and the server's records: new NotifyLog "
        "rows all 'received' (valid) or 'duplicate' (duplicates), new orders (creation), as many "
        "as the expected answers"
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
    print_sql(sql, timings)
    if profiles:
        print()
        print(
            f"profile (pyinstrument, in process, {args.profile_requests} requests each; "
            "ms per request):"
        )
        print_profiles(profiles, tree_lines=60)
    print()
    print_rounds(rounds)
    print()
    header = (
        f"{'path':<48}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'floor/s':>9}{'f p50':>7}{'f p99':>7}{'errors':>8}{'ratio':>7}{'goal':>6}  met?"
    )
    print(header)
    print("-" * len(header))
    for name in ("valid", "duplicate", "create"):
        m = medians(rounds[name])
        goal = GOALS[name]
        print(
            f"{titles[name]:<48}{m['rate']:>8.0f}{m['p50']:>8.1f}{m['p99']:>8.1f}"
            f"{m['floor']:>9.0f}{m['floor_p50']:>7.1f}{m['floor_p99']:>7.1f}"
            f"{errors_cell(m):>8}{m['ratio']:>7.1%}{goal:>6.0%}  {verdict(m, goal)}"
        )
    print(
        "(req/s (expected answers only), latencies: medians over the rounds; floor: the bare "
        "rounds of the same figure; errors: endpoint+floor over all rounds, mN: N record "
        "mismatches; INVALID: any error, mismatch or exhausted wrk thread, not to be quoted)"
    )
    print()
    errors = {
        name: sum(run["errors"] + floor["errors"] for floor, run in pairs)
        for name, pairs in rounds.items()
    }
    exhausted = {
        name: sum(run["exhausted_threads"] for _, run in pairs) for name, pairs in rounds.items()
    }
    print(
        f"answers other than expected (endpoint and floor rounds): {errors}; wrk threads that "
        f"ran out of requests: {exhausted}"
    )
    print(
        f"duplicate rounds drew on {dup_distinct} applied callbacks (a round that needs more "
        f"starts over: a callback sent a third time is a duplicate too)"
    )
    print(
        f"books: {checks['paid_orders']} paid orders, {checks['charges']} charges "
        f"({'consistent' if checks['paid_orders'] == checks['charges'] else 'MISMATCH'}); "
        f"received callbacks moved from the inbox and applied by one worker process: "
        f"{checks['apply_rate']:.0f}/s; "
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
