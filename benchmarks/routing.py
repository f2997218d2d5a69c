"""Routing benchmark: deliveries/s next to no-op tasks/s on the same broker
and worker, and event→received latency at half the delivery rate.

Runs the real engine on a scratch PostgreSQL database and Redis database
(production settings, DEBUG=0): one Celery worker on the ``deliveries``
queue, and a department's HTTP server in this process that answers 200 and
notes when each event arrived. Applications are submitted beforehand (each
by its own citizen) to a paused endpoint, so their ``application.submitted``
deliveries wait; a round then releases a batch of them at once, as a
resumed endpoint or a burst of submissions would, and wakes the worker.

- Floor: the worker drains as many no-op tasks (``platform.noop``) from the
  same queue on the same broker. They are published before the clock
  starts, while the worker does not consume the queue
  (``control.cancel_consumer``); the clock starts when the worker is told
  to consume again (``control.add_consumer``) and stops when the queue is
  empty and nothing is unacknowledged (tasks are acked late: all ran).
  After a warm-up pair (not counted) the rounds alternate floor,
  deliveries, floor, deliveries..., and the median of the per-round ratios
  is quoted.
- Deliveries: the clock starts at the release (rows made due, then a wake)
  and stops when every delivery of the round is recorded as succeeded in
  the database and every application routed (the department having
  received each is checked too): both clocks run from release to fully
  done.
- Latency: deliveries released at half the median delivery rate, every
  20 ms as many as that rate brings (each release as a publish's commit
  does: rows made due, then a wake), from release to received, p50/p95/p99.

    .venv/bin/python benchmarks/routing.py [--backlog 1500] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import FORM, bench_service, log, scratch_stack, tree_state  # noqa: E402


class _Server(ThreadingHTTPServer):
    # A worker sends a batch over many connections at once; the standard
    # library's listen backlog of 5 resets the ones beyond it.
    request_queue_size = 128


class Department:
    """Answers 200 at once and notes when each webhook-id first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        department = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.monotonic()
                with department.lock:
                    department.arrived.setdefault(self.headers["webhook-id"], now)
                answer = b'{"reference": "BENCH"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, ids: list[str]) -> int:
        with self.lock:
            return sum(1 for i in ids if i in self.arrived)


# The latency run releases events every TICK seconds, as many as the pace
# brings in that time: what many citizens submitting at once look like to
# the engine (each tick one statement and one wake, as a publish's commit).
TICK = 0.02
# How often both rounds look whether they are done (the deliveries' look is
# a query: often enough for a few per cent of a round, not so often as to
# take the CPU the worker needs).
POLL = 0.01


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def wait_until(predicate, *, timeout: float, what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(interval)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=1500, help="deliveries per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of the latency run")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes (prefork)")
    args = parser.parse_args()

    with (
        scratch_stack("routing", ROUTING_ALLOW_PRIVATE_ENDPOINTS="1") as stack,
        ExitStack() as running,
    ):
        import redis
        from celery.utils.nodenames import host_format
        from django.db import connections
        from django.utils import timezone

        from accounts.models import Department as DepartmentRow
        from accounts.models import User
        from config.celery import app as celery_app
        from services.applications import application_submit
        from services.models import Application, Delivery, DeliveryStatus, Endpoint
        from services.routing import endpoints, events, outbox
        from tests.processes import celery_worker

        department = Department()
        owner = DepartmentRow.objects.create(code="bench", name="基准测试部门")
        service = bench_service(code="bench-service", name="基准测试事项", department=owner)
        endpoint, _secret = endpoints.endpoint_create(
            department=owner, url=department.url, events=[events.APPLICATION_SUBMITTED], actor=None
        )
        # Paused: the submissions' deliveries are written held, not sent.
        Endpoint.objects.filter(pk=endpoint.pk).update(paused_at=timezone.now())

        def submit(count: int) -> list[tuple[str, str]]:
            """``count`` applications, each by a new citizen; their deliveries'
            (id, webhook-id), held."""
            first = User.objects.count()
            citizens = User.objects.bulk_create(
                [User(phone=f"139{first + n:08d}") for n in range(count)]
            )
            made = []
            for n, citizen in enumerate(citizens, 1):
                application = application_submit(citizen=citizen, service=service, form=FORM)
                made.append(application.pk)
                if n % 500 == 0:
                    log(f"  {n}/{count} submitted")
            return [
                (str(d.pk), d.event.webhook_id)
                for d in Delivery.objects.select_related("event").filter(
                    event__application_id__in=made
                )
            ]

        log(f"submitting {args.rounds} x {args.backlog} applications (deliveries held)")
        backlogs = [submit(args.backlog) for _ in range(args.rounds)]
        warmup = submit(min(args.backlog, 300))
        Endpoint.objects.filter(pk=endpoint.pk).update(paused_at=None)

        connections.close_all()
        running.enter_context(
            celery_worker(
                "--concurrency",
                str(args.concurrency),
                "-Q",
                "deliveries",
                "-n",
                "bench@%h",
                log=stack.work / "worker.log",
                wait=False,  # LOG_LEVEL=WARNING: no "ready." line; a no-op task tells instead
            )
        )
        broker = redis.Redis.from_url(stack.redis_url)

        def queue_empty() -> bool:
            return broker.llen("deliveries") == 0 and not broker.hlen("unacked")

        noop = celery_app.signature("platform.noop")
        noop.apply_async(queue="deliveries")
        wait_until(queue_empty, timeout=60, what="the worker to start")

        worker_name = [host_format("bench@%h")]

        def consuming(on: bool) -> None:
            """Have the worker stop or start consuming the deliveries queue
            (a broadcast; waits for its reply)."""
            control = celery_app.control
            change = control.add_consumer if on else control.cancel_consumer
            replies = change("deliveries", destination=worker_name, reply=True, timeout=10)
            if not replies:
                raise SystemExit(f"the worker did not answer {'add' if on else 'cancel'}_consumer")

        def floor_round(count: int) -> float:
            # Published first, with nobody consuming: the clock runs only
            # while the worker drains them, as it runs only while deliveries go.
            consuming(False)
            with celery_app.producer_or_acquire() as producer:
                for _ in range(count):
                    noop.apply_async(queue="deliveries", producer=producer)
            # At least: a wake left from the last delivery batch may be there too.
            wait_until(
                lambda: broker.llen("deliveries") >= count,
                timeout=60,
                what="the no-op tasks to be queued",
            )
            began = time.monotonic()
            consuming(True)
            wait_until(queue_empty, timeout=300, what="the no-op tasks", interval=POLL)
            return count / (time.monotonic() - began)

        def delivery_round(backlog: list[tuple[str, str]]) -> float:
            ids, hooks = [d for d, _ in backlog], [w for _, w in backlog]
            began = time.monotonic()
            Delivery.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now())
            outbox.deliveries_wake()
            # Done when every delivery is recorded as succeeded. Polling the
            # database all along (a count over 1500 ids, about 8 ms of
            # PostgreSQL each, every 10 ms) took CPU from the worker: while
            # the department is still receiving, the poll is of its counter
            # in this process; the database is asked only for the last
            # batches' records, at the floor's interval.
            wait_until(
                lambda: department.received(hooks) == len(hooks),
                timeout=600,
                what="the department to receive every delivery",
                interval=POLL,
            )
            succeeded = Delivery.objects.filter(pk__in=ids, status=DeliveryStatus.SUCCEEDED)
            wait_until(
                lambda: succeeded.count() == len(ids),
                timeout=120,
                what="the deliveries to be recorded as succeeded",
                interval=POLL,
            )
            rate = len(ids) / (time.monotonic() - began)
            wait_until(
                lambda: (
                    not Application.objects.filter(
                        status="submitted", events__deliveries__in=ids
                    ).exists()
                ),
                timeout=120,
                what="the applications to be routed",
                interval=0.05,
            )
            return rate

        # Warm-up, not counted: the worker's processes open their connections
        # and load what they load on first use.
        log("warm-up round")
        floor_round(len(warmup))
        delivery_round(warmup)
        pairs = []
        for k, backlog in enumerate(backlogs, 1):
            floor = floor_round(len(backlog))
            rate = delivery_round(backlog)
            pairs.append((floor, rate))
            log(
                f"  round {k}: no-op tasks {floor:.0f}/s, deliveries {rate:.0f}/s ({rate / floor:.0%})"
            )
        ratio = statistics.median(r / f for f, r in pairs)
        drain = statistics.median(r for _, r in pairs)
        floor_rate = statistics.median(f for f, _ in pairs)

        # Latency at half the delivery rate.
        pace = drain / 2
        count = int(pace * args.seconds)
        per_tick = max(1, round(pace * TICK))
        log(f"latency at {pace:.0f}/s: submitting {count} more applications (held)")
        Endpoint.objects.filter(pk=endpoint.pk).update(paused_at=timezone.now())
        paced = submit(count)
        Endpoint.objects.filter(pk=endpoint.pk).update(paused_at=None)
        released: dict[str, float] = {}
        began = time.monotonic()
        ticks = [paced[i : i + per_tick] for i in range(0, len(paced), per_tick)]
        for n, tick in enumerate(ticks):
            delay = began + n * TICK - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            Delivery.objects.filter(pk__in=[d for d, _ in tick]).update(
                next_attempt_at=timezone.now()
            )
            now = time.monotonic()
            released.update((hook, now) for _, hook in tick)
            outbox.deliveries_wake()
        achieved = len(paced) / (time.monotonic() - began)
        hooks = list(released)
        wait_until(
            lambda: department.received(hooks) == len(hooks),
            timeout=300,
            what="the paced deliveries",
            interval=0.01,
        )
        with department.lock:
            latencies = [(department.arrived[h] - released[h]) * 1000 for h in hooks]

        print()
        print(
            f"routing benchmark at {tree_state()}: 1 Celery worker (prefork x{args.concurrency}, "
            f"-Q deliveries, batch {os.environ.get('ROUTING_BATCH_SIZE', 32)}), "
            f"PostgreSQL + Redis (broker), DEBUG=0, {os.cpu_count()} CPUs; the department "
            "answers 200 from this process"
        )
        print(f"{'round':<8}{'no-op tasks/s':>16}{'deliveries/s':>16}{'ratio':>8}")
        for k, (floor, rate) in enumerate(pairs, 1):
            print(f"{k:<8}{floor:>16.0f}{rate:>16.0f}{rate / floor:>8.0%}")
        print(
            f"median: deliveries {drain:.0f}/s ÷ no-op tasks {floor_rate:.0f}/s = {ratio:.2f} "
            f"(backlogs of {args.backlog}, each application by its own citizen; both timed from "
            "release to fully done: no-op tasks published beforehand with the worker not "
            "consuming, then all run; deliveries all recorded as succeeded)"
        )
        print(
            f"release→received at {pace:.0f}/s (half the delivery rate; {achieved:.0f}/s achieved, "
            f"{len(latencies)} events): p50 {percentile(latencies, 0.5):.0f} ms, "
            f"p95 {percentile(latencies, 0.95):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms"
        )
    return 1 if stack.redis_lost else 0


if __name__ == "__main__":
    sys.exit(main())
