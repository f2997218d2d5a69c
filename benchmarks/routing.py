"""Routing benchmark: submit rate, delivery rate and submit→delivered latency.

Runs the real stack on a scratch PostgreSQL database and Redis database:
gunicorn (production settings, DEBUG=0), one Celery worker, and an HTTP sink
in this process playing the department. Every figure is printed next to a
floor measured in the same run on the same processes:

- submit requests/s through ``POST /api/v1/applications/`` next to a bare
  Django JSON view (``/bench/bare``) under the same load generator;
- end-to-end deliveries/s (submitted → signed POST received by the
  department) next to the rate at which the same worker drains no-op tasks
  from the same ``deliveries`` queue on the same broker;
- p50/p99 submit→delivered latency.

    .venv/bin/python benchmarks/routing.py [--applications 600] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import redis
from cryptography.fernet import Fernet
from harness import FORM, bench_service

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Sink:
    """The department: answers 200 at once and notes when each number arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.time()
                number = json.loads(body).get("data", {}).get("application", {}).get("number")
                with sink.lock:
                    if number and number not in sink.arrived:
                        sink.arrived[number] = now
                answer = b'{"reference": "BENCH"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def load(url: str, *, seconds: float, threads: int, method: str = "GET", body=None, headers=None):
    """Closed-loop load: ``threads`` clients call as fast as answers come."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal errors
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                response = http.request(method, url, json=body, headers=headers)
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code < 300:
                        latencies.append(elapsed)
                    else:
                        errors += 1

    began = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(client) for _ in range(threads)]:
            future.result()
    duration = time.monotonic() - began
    return len(latencies) / duration, latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--applications", type=int, default=300, help="paced submissions for latency"
    )
    parser.add_argument("--pace", type=float, default=20.0, help="at most this many submissions/s")
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="length of each request-rate run"
    )
    parser.add_argument("--threads", type=int, default=16, help="load generator clients")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--worker-concurrency", type=int, default=8)
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()

    database = f"mcs_bench_routing_{os.getpid()}"
    with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(args.redis).flushdb()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-routing-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"{args.postgres}/{database}",
        "REDIS_URL": args.redis,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(30),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "BENCHMARK_VIEWS": "1",
        "ROUTING_ALLOW_PRIVATE_ENDPOINTS": "1",
        "LOG_LEVEL": "WARNING",
        "SMS_BACKEND": "file",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    running = ExitStack()  # the web and worker processes, stopped before the database goes
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from rest_framework_simplejwt.tokens import RefreshToken

        from accounts.models import Department, User
        from config.celery import app as celery_app
        from services.routing import endpoints, events
        from tests.processes import celery_worker, wait_for, web_server

        call_command("migrate", verbosity=0)
        department = Department.objects.create(code="bench", name="基准测试部门")
        bench_service(code="bench-service", name="基准测试事项", department=department)
        citizen = User.objects.create(phone="13800138000")
        sink = Sink()
        endpoints.endpoint_create(
            department=department, url=sink.url, events=[events.APPLICATION_SUBMITTED], actor=None
        )
        token = str(RefreshToken.for_user(citizen).access_token)
        auth = {"Authorization": f"Bearer {token}"}

        base = running.enter_context(web_server(workers=args.web_workers, log=work / "web.log"))
        submit_body = {"service": "bench-service", "form": FORM}

        # 1. Request rates, worker not running: the web's cost alone.
        load(f"{base}/bench/bare", seconds=1, threads=args.threads)
        load(
            f"{base}/api/v1/applications/",
            seconds=1,
            threads=args.threads,
            method="POST",
            body=submit_body,
            headers=auth,
        )
        bare_rate, bare_lat, _ = load(
            f"{base}/bench/bare", seconds=args.seconds, threads=args.threads
        )
        submit_rate, submit_lat, submit_errors = load(
            f"{base}/api/v1/applications/",
            seconds=args.seconds,
            threads=args.threads,
            method="POST",
            body=submit_body,
            headers=auth,
        )
        from services.models import Delivery

        backlog = Delivery.objects.filter(status="pending").count()

        # 2. One worker drains the backlog those submits left: deliveries/s.
        sink.arrived.clear()
        running.enter_context(
            celery_worker(
                "--concurrency",
                str(args.worker_concurrency),
                "-n",
                "bench@%h",
                log=work / "worker.log",
                wait=False,  # LOG_LEVEL=WARNING: no "ready." line; the drain is timed by arrivals
            )
        )
        wait_for(
            lambda: not Delivery.objects.filter(status="pending").exists(),
            timeout=600,
            interval=0.2,
            message="gave up waiting for the backlog",
        )
        arrivals = sorted(sink.arrived.values())
        drain_rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])

        # 3. Latency at a steady pace below capacity: submit → signed POST received.
        pace = max(2.0, min(args.pace, drain_rate / 2, submit_rate / 2))
        submitted: dict[str, float] = {}
        lock = threading.Lock()

        def submit_one(_: int) -> None:
            with httpx.Client(timeout=30) as http:
                started = time.time()
                response = http.post(f"{base}/api/v1/applications/", json=submit_body, headers=auth)
                response.raise_for_status()
                with lock:
                    submitted[response.json()["number"]] = started

        with ThreadPoolExecutor(8) as pool:
            began = time.monotonic()
            futures = []
            for n in range(args.applications):
                delay = began + n / pace - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(submit_one, n))
            for future in futures:
                future.result()
        wait_for(
            lambda: all(n in sink.arrived for n in list(submitted)),
            timeout=300,
            interval=0.02,
            message="gave up waiting for the paced deliveries",
        )
        latencies = [sink.arrived[n] - submitted[n] for n in submitted]

        # 4. Floor: the same worker draining no-op tasks from the same queue.
        broker = redis.Redis.from_url(args.redis)
        noop = celery_app.signature("platform.noop")
        count = max(backlog, 1000)
        with celery_app.producer_or_acquire() as producer:
            for _ in range(count):
                noop.apply_async(queue="deliveries", producer=producer)
        started = time.time()
        wait_for(
            lambda: broker.llen("deliveries") == 0 and not broker.hlen("unacked"),
            timeout=300,
            interval=0.005,
            message="gave up waiting for the no-op tasks",
        )
        noop_rate = count / (time.time() - started)

        print()
        print(
            f"routing benchmark: {args.web_workers} gunicorn workers, 1 Celery worker (prefork x{args.worker_concurrency}), "
            f"PostgreSQL + Redis, {args.threads} client threads, {os.cpu_count()} CPUs"
        )
        print(f"{'measure':<46}{'figure':>12}{'floor':>12}{'ratio':>8}")
        print(
            f"{'submit requests/s vs bare JSON view':<46}{submit_rate:>12.0f}{bare_rate:>12.0f}{submit_rate / bare_rate:>8.0%}"
        )
        print(
            f"{'  p50 / p99 latency (ms)':<46}{percentile(submit_lat, 0.5) * 1000:>6.1f}/{percentile(submit_lat, 0.99) * 1000:<5.0f}"
            f"{percentile(bare_lat, 0.5) * 1000:>6.1f}/{percentile(bare_lat, 0.99) * 1000:<5.0f}"
        )
        print(
            f"{f'deliveries/s (backlog of {backlog}) vs no-op tasks/s':<46}{drain_rate:>12.0f}{noop_rate:>12.0f}{drain_rate / noop_rate:>8.0%}"
        )
        print(
            f"{f'submit→delivered p50 / p99 (ms) at {pace:.0f}/s':<46}{percentile(latencies, 0.5) * 1000:>6.0f}/{percentile(latencies, 0.99) * 1000:<5.0f}"
        )
        print(
            f"({len(submitted)} paced applications; {submit_errors} failed submits in the rate run)"
        )
    finally:
        running.close()
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{args.postgres}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        redis.Redis.from_url(args.redis).flushdb()


if __name__ == "__main__":
    main()
