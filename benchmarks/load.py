"""The city's mix at once, per endpoint, next to the bare view of the same run.

    .venv/bin/python benchmarks/load.py [--seconds 20] [--rounds 3] [--users 16] [--scanners 1]

The real stack on a scratch PostgreSQL database and an empty Redis
database: gunicorn with the production settings (DEBUG=0) and 2 sync
workers, a Celery worker routing what is submitted (to a department with no
endpoint registered, so nothing leaves the machine). Load comes from locust
(``benchmarks/load_locustfile.py``, headless, in another process, ``--users``
concurrent users with no think time), in rounds alternated A B A B: the
floor (only ``/bench/bare``) and the mix:

- 30: the first catalog page, then a service's guide (catalog browsing);
- 25: star-code refreshes, each by a different citizen with a login's token;
- 25: scanner verifies, each a code no scanner has seen, round-robin over
  ``--scanners`` terminals (API keys; the output says how many), each
  answer required to say ``"valid": true``;
- 5: submissions of a free service, each by a different citizen;
- 10: status reads, each of a different citizen's application;
- 5: a department accepting an application (a different one each time).

Per endpoint: requests/s of successful answers and p50/p95/p99 (locust's
figures, medians over the mix rounds), next to the floor's; the mix's share
of the floor is the median of the per-round ratios (successful answers
only). A failure in any round (floor or mix; a pool that runs out counts
one), or valid online scans on record after a mix round that do not match
its successful verifies, marks the run INVALID and makes the exit code 1. The per-citizen and per-terminal rate
limits are raised for the capacity run (the output says so). Needs
PostgreSQL (``BENCH_PG``), Redis (``BENCH_REDIS``) and locust (a dev
dependency).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from harness import FORM, ROOT, log, scratch_stack, settled, tree_state, web_log_problems

RAISED_RATES = {"QR_VERIFY_RATE": "100000000/min", "QR_STAR_CODE_RATE": "100000000/min"}
EXTRA_ENV = {"STAR_CODE_TTL": "1800", "JWT_ACCESS_MINUTES": "60"}
LOCUSTFILE = ROOT / "benchmarks" / "load_locustfile.py"


def seed(pool: int, scanners: int) -> dict[str, Any]:
    """Everything the locust users send, made with the project's functions."""
    import hotpaths  # noqa: PLC0415  # the same seeding as the hot paths' benchmark
    from django.conf import settings

    from accounts.api_keys import api_key_create
    from accounts.models import ApiKeyScope
    from accounts.tokens import tokens_issue
    from qr import codes
    from services.models import Application

    seeder = hotpaths.Seeder(scanners=scanners)
    _key, integrator = api_key_create(
        department=seeder.free.department, scope=ApiKeyScope.INTEGRATOR
    )

    def tokens(n: int) -> list[str]:
        return [tokens_issue(user=c)["access"] for c in seeder.citizens(n)]

    log(f"seeding pools of {pool} (citizens, tokens, codes, applications) …")
    now = int(time.time())
    code_citizens = seeder.citizens(pool)
    signed = [
        codes.sign(
            {
                "iss": settings.QR_ISSUER,
                "sub": c.subject,
                "iat": now,
                "exp": now + 1800,
                "jti": f"load{i:010d}",
                "lvl": 2,
                "knd": "citizen",
            },
            kid=seeder.kid,
            private_key=seeder.private,
        )
        for i, c in enumerate(code_citizens)
    ]
    from services.applications import application_submit

    applicants = seeder.citizens(pool // 2)
    made = [application_submit(citizen=c, service=seeder.free, form=FORM) for c in applicants]
    reads = [(tokens_issue(user=a.applicant)["access"], str(a.pk)) for a in made]
    to_accept = [a.number for a in made]
    assert Application.objects.filter(number__in=to_accept[:5], status="submitted").count() == 5
    return {
        "services": seeder.codes,
        "issue_tokens": tokens(pool),
        "submit_tokens": tokens(pool // 4),
        "codes": signed,
        "reads": reads,
        "numbers": to_accept,
        "scanner_keys": seeder.scanner_keys,
        "integrator_key": integrator,
        "free_service": seeder.free.code,
        "form": FORM,
    }


POOLS = ("issue_tokens", "submit_tokens", "codes", "reads", "numbers")


def round_data(data: dict[str, Any], k: int, runs: int, work: Path) -> Path:
    """Run ``k``'s share of every pool (runs never reuse an item), as a file."""
    share = dict(data)
    for name in POOLS:
        size = len(data[name]) // runs
        share[name] = data[name][k * size : (k + 1) * size]
    path = work / f"load-data-{k}.json"
    path.write_text(json.dumps(share), encoding="utf-8")
    return path


def locust_round(
    base: str, data: Path, mode: str, *, users: int, seconds: float, work: Path, k: int
) -> dict[str, dict[str, float]]:
    """One headless locust run; per request name: rate and percentiles."""
    binary = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    prefix = work / f"{mode}-{k}"
    argv = [
        binary,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        f"{seconds:g}s",
        "--host",
        base,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "LOAD_DATA": str(data), "LOAD_MODE": mode}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 120)
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.exists():
        raise RuntimeError(f"locust failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    rows: dict[str, dict[str, float]] = {}
    with stats_file.open() as handle:
        for row in csv.DictReader(handle):
            count, failed = float(row["Request Count"]), float(row["Failure Count"])
            rows[row["Name"]] = {
                # Successful answers only: failures are not throughput.
                "rate": float(row["Requests/s"]) * (count - failed) / count if count else 0.0,
                "count": count,
                "failures": float(row["Failure Count"]),
                "p50": float(row["50%"] or 0),
                "p95": float(row["95%"] or 0),
                "p99": float(row["99%"] or 0),
            }
    failures = Path(f"{prefix}_failures.csv")
    if failures.exists():
        lines = failures.read_text().strip().splitlines()[1:]
        if lines:
            log("  failures: " + "; ".join(lines[:5]))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds (odd: a true median)")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", type=int, default=20000, help="items per pool (each used once)")
    parser.add_argument(
        "--scanners", type=int, default=1, help="scanner terminals (API keys) verifies go over"
    )
    args = parser.parse_args()
    if args.scanners < 1:
        parser.error("--scanners must be at least 1")
    started = time.monotonic()
    floors: list[dict[str, dict[str, float]]] = []
    mixes: list[dict[str, dict[str, float]]] = []
    mismatches: list[str] = []
    import hotpaths  # noqa: PLC0415  # counts valid scans as the hot paths' benchmark does

    with ExitStack() as running:
        stack = running.enter_context(scratch_stack("load", **RAISED_RATES, **EXTRA_ENV))
        pools = seed(args.pool, args.scanners)
        runs = args.rounds + 1  # the warm-up's share first
        from django.db import connections

        from tests.processes import celery_worker, web_server

        connections.close_all()
        base = running.enter_context(
            web_server(workers=args.workers, log=stack.work / "web.log", **stack.env)
        )
        running.enter_context(
            celery_worker(
                "--concurrency", "1", log=stack.work / "worker.log", wait=False, **stack.env
            )
        )
        log(f"warm-up ({args.users} users, 5 s) …")
        warm = round_data(pools, 0, runs, stack.work)
        locust_round(base, warm, "mix", users=args.users, seconds=5, work=stack.work, k=0)
        for k in range(1, args.rounds + 1):
            data = round_data(pools, k, runs, stack.work)
            floors.append(
                locust_round(
                    base,
                    data,
                    "floor",
                    users=args.users,
                    seconds=args.seconds,
                    work=stack.work,
                    k=k,
                )
            )
            before = settled(hotpaths.valid_online_scans)
            mixes.append(
                locust_round(
                    base, data, "mix", users=args.users, seconds=args.seconds, work=stack.work, k=k
                )
            )
            problem = scans_check(
                mixes[-1], settled(hotpaths.valid_online_scans) - before, users=args.users
            )
            if problem:
                mismatches.append(f"round {k}: {problem}")
            log(
                f"  round {k}: floor {floors[-1]['Aggregated']['rate']:.0f}/s, "
                f"mix {mixes[-1]['Aggregated']['rate']:.0f}/s"
                + (f"; MISMATCH: {problem}" if problem else "")
            )
        web_errors = web_log_problems(stack)

    failed = sum(
        row["failures"]
        for rows in (*floors, *mixes)
        for name, row in rows.items()
        if name != "Aggregated"
    )
    report(args, floors, mixes, mismatches, web_errors, started)
    return 1 if failed or mismatches or stack.redis_lost else 0


VERIFY = "POST /qr/verify/"


def scans_check(mix: dict[str, dict[str, float]], recorded: int, *, users: int) -> str:
    """The valid online scans a mix round put on record against its verify
    answers: at least the successful ones, at most every verify sent (each
    of ``users`` may have had one in flight when locust stopped); what is
    wrong, or ""."""
    row = mix.get(VERIFY, {"count": 0.0, "failures": 0.0})
    ok, sent = int(row["count"] - row["failures"]), int(row["count"]) + users
    if ok <= recorded <= sent:
        return ""
    return (
        f"{recorded} valid scans on record for {ok} valid answers ({row['count']:.0f} verifies "
        f"answered, {row['failures']:.0f} failed, at most {users} more in flight)"
    )


def report(
    args: argparse.Namespace,
    floors: list[dict[str, dict[str, float]]],
    mixes: list[dict[str, dict[str, float]]],
    mismatches: list[str],
    web_errors: str,
    started: float,
) -> None:
    def med(rows: list[dict[str, dict[str, float]]], name: str, key: str) -> float:
        values = [r[name][key] for r in rows if name in r]
        return statistics.median(values) if values else float("nan")

    print()
    print("=" * 100)
    print(
        f"the city's mix: gunicorn {args.workers} sync workers, DEBUG=0, PostgreSQL + Redis, one "
        f"Celery worker; locust headless, {args.users} users without think time, in another "
        f"process; {args.rounds} alternating rounds (floor, mix) of {args.seconds:g} s; medians"
    )
    print(
        "rate limits raised for the capacity run: "
        + ", ".join(f"{k}={v}" for k, v in RAISED_RATES.items())
    )
    print(
        f"verify: {args.scanners} scanner API key(s), round-robin; a verify succeeds only if its "
        'answer says "valid": true, and each mix round\'s valid online scans on record must '
        "match its successful verifies; req/s counts successful answers only"
    )
    print()
    header = f"{'endpoint':<44}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'failed':>8}"
    print(header)
    print("-" * len(header))
    floor_name = "floor /bench/bare"
    print(
        f"{floor_name + ' (floor rounds)':<44}{med(floors, floor_name, 'rate'):>8.0f}"
        f"{med(floors, floor_name, 'p50'):>8.0f}{med(floors, floor_name, 'p95'):>8.0f}"
        f"{med(floors, floor_name, 'p99'):>8.0f}{sum(r[floor_name]['failures'] for r in floors):>8.0f}"
    )
    names = sorted({n for mix in mixes for n in mix if n != "Aggregated"})
    for name in [*names, "Aggregated"]:
        label = "all of the mix" if name == "Aggregated" else name
        print(
            f"{label:<44}{med(mixes, name, 'rate'):>8.0f}{med(mixes, name, 'p50'):>8.0f}"
            f"{med(mixes, name, 'p95'):>8.0f}{med(mixes, name, 'p99'):>8.0f}"
            f"{sum(r.get(name, {}).get('failures', 0) for r in mixes):>8.0f}"
        )
    ratios = [
        mix["Aggregated"]["rate"] / floor[floor_name]["rate"]
        for floor, mix in zip(floors, mixes, strict=True)
        if "Aggregated" in mix and floor.get(floor_name, {}).get("rate")
    ]
    ratio = statistics.median(ratios) if ratios else float("nan")
    print(
        f"the mix's requests/s as a share of the floor's: {ratio:.1%} (median of the per-round "
        f"ratios {', '.join(f'{r:.1%}' for r in ratios)})"
    )
    failed = sum(
        row["failures"]
        for rows in (*floors, *mixes)
        for name, row in rows.items()
        if name != "Aggregated"
    )
    for mismatch in mismatches:
        print(f"MISMATCH {mismatch}")
    if failed or mismatches:
        print(
            f"INVALID: {failed:.0f} failures (floor and mix rounds), {len(mismatches)} record "
            "mismatches: these figures are not to be quoted"
        )
    print("(locust's percentiles are rounded to its buckets)")
    print(f"code measured: {tree_state()}")
    print(f"total time {time.monotonic() - started:.0f} s")
    if web_errors.strip():
        print("gunicorn log (beyond its start-up lines):")
        print(web_errors.strip())


if __name__ == "__main__":
    sys.exit(main())
