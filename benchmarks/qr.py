"""Star-code figures, each next to its floor from the same run.

    .venv/bin/python benchmarks/qr.py [--seconds 5] [--rounds 3] [--workers 4]

- HTTP: ``POST /api/v1/qr/verify/`` (a fresh code per request, scanner key,
  PostgreSQL + Redis, scan events buffered) against ``/bench/bare`` (a bare
  Django JSON view with the same middleware), both through one gunicorn
  server, alternating, best round of each; ``GET /api/v1/me/star-code/``
  (issuance) on the same server.
- Offline: ``qr.codes.verify`` (what the endpoint runs) against a loop of
  raw ``cryptography`` Ed25519 verifications over the same signatures.

Needs PostgreSQL and Redis (``BENCH_PG``, default
``postgres://postgres@127.0.0.1:5432``; ``BENCH_REDIS``, default
``redis://127.0.0.1:6379``). It makes a scratch database and uses an empty
Redis database, and removes both when done.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
PORT = int(os.environ.get("BENCH_PORT", "8791"))
SECRETS = {
    "DEBUG": "0",
    "SECRET_KEY": "bench-" + "s" * 50,
    "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "BLIND_INDEX_KEY": "bench-" + "b" * 40,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "LOG_LEVEL": "WARNING",
    "SMS_BACKEND": "file",
}


def free_redis_db() -> int:
    import redis

    for number in range(15, 9, -1):
        if redis.Redis.from_url(f"{REDIS}/{number}").dbsize() == 0:
            return number
    raise SystemExit("no empty Redis database between 10 and 15")


def setup_environment() -> tuple[str, str, dict[str, str]]:
    database = f"mcs_bench_qr_{os.getpid()}"
    redis_url = f"{REDIS}/{free_redis_db()}"
    env = {
        **os.environ,
        **SECRETS,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DATABASE_URL": f"{PG}/{database}",
        "REDIS_URL": redis_url,
        "BENCHMARK_VIEWS": "1",
        "STAR_CODE_TTL": "900",  # codes made up front must outlive the run
        "QR_VERIFY_RATE": "100000000/min",
        "QR_STAR_CODE_RATE": "100000000/min",
        "PYTHONUNBUFFERED": "1",
    }
    return database, redis_url, env


# --- Load generator -------------------------------------------------------------------


def request_bytes(method: str, path: str, *, headers: dict[str, str], body: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def load(requests: list[bytes], seconds: float, threads: int = 8) -> dict[str, float]:
    """Closed-loop load: each thread sends the next request when the last is
    answered. Raw sockets keep the client's own cost small."""
    latencies: list[float] = []
    errors = [0]
    cursor = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while True:
            with lock:
                index = cursor[0]
                cursor[0] += 1
            if index >= len(requests):
                break
            started = time.perf_counter()
            if started > stop:
                break
            sock = socket.create_connection(("127.0.0.1", PORT))
            sock.sendall(requests[index])
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            sock.close()
            mine.append(time.perf_counter() - started)
            answer = b"".join(chunks)
            if not answer.startswith(b"HTTP/1.1 200") or b'"valid":false' in answer:
                errors[0] += 1
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    began = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan"),
        "count": len(latencies),
        "errors": errors[0],
    }


# --- Offline verification ---------------------------------------------------------------


def offline(count: int = 20000, rounds: int = 3) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qr import codes

    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    now = int(time.time())
    texts = [
        codes.sign(
            {
                "iss": "https://my.changsha.gov.cn",
                "sub": f"s_{i:024x}",
                "iat": now,
                "exp": now + 60,
                "jti": f"{i:016x}",
                "lvl": 2,
                "knd": "citizen",
            },
            kid="20261125-bench",
            private_key=private,
        )
        for i in range(count)
    ]
    raw = []
    for text in texts:
        h, p, s = text[5:].split(".")
        raw.append((codes.b64url_decode(s), f"{h}.{p}".encode()))
    keys = {"20261125-bench": public}
    best_ours = best_raw = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for signature, message in raw:
            public.verify(signature, message)
        best_raw = max(best_raw, count / (time.perf_counter() - started))
        started = time.perf_counter()
        for text in texts:
            codes.verify(text, keys=keys, now=now, issuer="https://my.changsha.gov.cn")
        best_ours = max(best_ours, count / (time.perf_counter() - started))
    return {"ours": best_ours, "raw": best_raw}


# --- Main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    database, redis_url, env = setup_environment()
    os.environ.update({k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"})
    sys.path.insert(0, str(ROOT))
    import psycopg

    admin = psycopg.connect(f"{PG}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{database}"')
    server = None
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        from accounts.api_keys import api_key_create
        from accounts.departments import department_ensure
        from accounts.models import ApiKeyScope
        from accounts.tokens import tokens_issue
        from qr import codes, keys, scans
        from qr.models import ScannerProfile
        from tests.accounts.factories import CitizenFactory

        department, _ = department_ensure(code="metro", name="长沙地铁")
        key, raw_key = api_key_create(department=department, scope=ApiKeyScope.SCANNER)
        ScannerProfile.objects.create(api_key=key, place="2号线 五一广场站")
        citizen = CitizenFactory(verified=True, phone="13800138000")
        access = tokens_issue(user=citizen)["access"]
        kid, private = keys.keyring_ensure()

        expected = int(args.seconds * args.rounds * 4000 + 20000)
        now = int(time.time())
        print(f"signing {expected} codes for the verify runs …", flush=True)
        verify_requests = [
            request_bytes(
                "POST",
                "/api/v1/qr/verify/",
                headers={"Authorization": f"Api-Key {raw_key}"},
                body=json.dumps(
                    {
                        "code": codes.sign(
                            {
                                "iss": "https://my.changsha.gov.cn",
                                "sub": citizen.subject,
                                "iat": now,
                                "exp": now + 900,
                                "jti": f"bench{i:012d}",
                                "lvl": 2,
                                "knd": "citizen",
                            },
                            kid=kid,
                            private_key=private,
                        )
                    }
                ),
            )
            for i in range(expected)
        ]
        bare = request_bytes("GET", "/bench/bare", headers={})
        issue = request_bytes(
            "GET", "/api/v1/me/star-code/", headers={"Authorization": f"Bearer {access}"}
        )
        from django.db import connections

        connections.close_all()

        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "config.wsgi",
                "--bind",
                f"127.0.0.1:{PORT}",
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.2)

        # Warm every worker: connections, key ring, auth and profile caches.
        load([bare] * 400, 2)
        offset = int(load(verify_requests[:400], 2)["count"])
        load([issue] * 200, 2)
        results: dict[str, list[dict[str, float]]] = {"bare": [], "verify": [], "issue": []}
        for _ in range(args.rounds):
            results["bare"].append(load([bare] * 10**6, args.seconds))
            run = load(verify_requests[offset:], args.seconds)
            offset += int(run["count"])
            results["verify"].append(run)
            results["issue"].append(load([issue] * 10**6, args.seconds))
        scans.scan_events_flush(budget=60)
        from qr.models import ScanEvent

        stored = ScanEvent.objects.count()
        best = {name: max(runs, key=lambda r: r["rate"]) for name, runs in results.items()}
        errors = sum(r["errors"] for runs in results.values() for r in runs)
        off = offline()
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            server.wait(timeout=20)
        from django.db import connections

        connections.close_all()
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        import redis

        redis.Redis.from_url(redis_url).flushdb()

    ratio = best["verify"]["rate"] / best["bare"]["rate"]
    offline_ratio = off["ours"] / off["raw"]
    print()
    print(
        f"gunicorn, {args.workers} sync workers; PostgreSQL + Redis; client: 8 threads, raw sockets"
    )
    print(f"best of {args.rounds} alternating {args.seconds:g}-second rounds")
    print()
    print(f"{'what':44} {'req/s':>9} {'p99 ms':>8} {'vs floor':>9}")
    print(
        f"{'GET /bench/bare (floor)':44} {best['bare']['rate']:9.0f} {best['bare']['p99_ms']:8.1f}"
    )
    print(
        f"{'POST /api/v1/qr/verify/':44} {best['verify']['rate']:9.0f} "
        f"{best['verify']['p99_ms']:8.1f} {ratio:8.0%}   (goal ≥ 60 %)"
    )
    print(
        f"{'GET /api/v1/me/star-code/ (issuance)':44} {best['issue']['rate']:9.0f} "
        f"{best['issue']['p99_ms']:8.1f} {best['issue']['rate'] / best['bare']['rate']:8.0%}"
    )
    print()
    print(f"{'offline':44} {'verifies/s':>9}")
    print(f"{'raw cryptography Ed25519 verify (floor)':44} {off['raw']:9.0f}")
    print(f"{'qr.codes.verify':44} {off['ours']:9.0f} {'':8} {offline_ratio:8.0%}   (goal ≥ 80 %)")
    print()
    print(
        f"answers that were not a valid 200: {errors}; verify requests answered: {offset}; "
        f"scan events stored: {stored}"
    )
    return 0 if errors == 0 and stored == offset else 1


if __name__ == "__main__":
    sys.exit(main())
