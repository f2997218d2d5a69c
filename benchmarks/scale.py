"""Do the read paths stay flat as the city grows? Latency and SQL at 10^4, 10^5, 10^6.

    .venv/bin/python benchmarks/scale.py [--sizes 10000,100000,1000000] [--requests 300]

A scratch PostgreSQL database is filled in place, size after size: N citizens
and N applications (with their timelines), then measured, then grown to the
next N and measured again. Each size is measured on these read paths, each
request made in this process through the WSGI application gunicorn serves
(``config.wsgi``, all middleware, DEBUG=0), each by a different caller or for
a different application where that applies:

1. a citizen's list, ``GET /api/v1/applications/`` (own JWT);
2. an application's detail, ``GET /api/v1/applications/{id}/`` (its citizen's JWT);
3. a department's list, ``GET /api/v1/dept/applications/?status=accepted``
   (integrator key; the ten departments in turn);
4. the overdue list, ``GET /admin/services/application/?deadline=overdue``
   (an operator's admin session: ``selectors.applications_with_deadline_state``
   behind the admin's deadline filter, the only overdue list there is);
5. the revocation feed, ``GET /api/v1/qr/revocations/?since=…`` (scanner key;
   ``since`` within the last hour, as a terminal polling it would send);
6. a department's deliveries, ``GET /api/v1/dept/deliveries/`` (integrator
   key; the ten departments in turn), and the same with ``?status=failed``
   (its dead letters);

and, as extras that are not part of the goal, a department's list without a
status filter (what a department system calls by default) and with
``?status=awaiting_payment`` (a value the API accepts whose rows are never
shown to departments).

For each size and path: p50 and p95 over ``--requests`` requests (fewer if
``--budget`` seconds run out first, at least 30), after 10 warm-up requests;
the SQL statements of 5 more requests (``CaptureQueriesContext``, counted in
the steady state: the integrator key's last use touched within the minute,
the scanner key remembered by the process); and ``EXPLAIN (ANALYZE, BUFFERS)``
of every ``SELECT`` of one request that reads a mass table (best of 3). The
table gives the ratio of the largest size to the smallest (goal: at most
1.5, with the same statement counts); the plans printed are each path's
slowest statement and every statement that scans a mass table sequentially,
discards many rows by filter or slows down with size.

What is loaded. The departments and the catalog are the demo ones
(``services/demo/catalog.json``, through ``department_ensure`` and
``catalog_import``); an integrator key per department and a scanner key
(``api_key_create``), an operator (``create_superuser``), a few citizens who
verify their real name, apply and are accepted through the project's own
functions, venue codes made and deactivated by ``qr.venue_codes``, and the
departments' endpoints (``endpoint_create``, on a local address nothing
listens on: nothing is sent while the benchmark runs). The
mass is written by PostgreSQL ``COPY`` in batches (one connection, a tqdm
progress bar): citizens (85 % real-name verified, 1 % closed and 0.5 %
suspended, so the revocation feed has subjects), about half of them with 1 to
3 applications each, two years of history, services chosen with a skewed
popularity, every status (mostly finished when old, in progress when recent;
due dates past and future; a few accepted ones overdue), the timeline each
status implies, the events sent to departments (each submitted
application's ``application.submitted``, each withdrawn one's
``application.cancelled``) with their deliveries to the department's
endpoints (one each, two for the first department; 97 % delivered, 2 %
dead letters, 1 % cancelled), and one venue code per 200 citizens (30 %
deactivated).
Encrypted columns (names, ID numbers, forms) take their ciphertexts from
pools made with ``accounts.pii``; blind indexes and subjects are unique.
``VACUUM (ANALYZE)`` after each size, as autovacuum would.

The admin's pages need the static files' manifest (DEBUG=0): ``collectstatic``
runs into the temporary directory first, not into the project's STATIC_ROOT.

Needs PostgreSQL (``BENCH_PG``, default ``postgres://postgres@127.0.0.1:5432``)
and Redis (``BENCH_REDIS``, default ``redis://127.0.0.1:6379``). The scratch
database, the Redis database and the temporary directory are removed when it
ends, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import itertools
import json
import math
import os
import random
import re
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from harness import describe_sql, log, scratch_stack, tree_state

DEFAULT_SIZES = "10000,100000,1000000"
GOAL = 1.5
HISTORY = dt.timedelta(days=730)
BATCH = 5000  # citizens per COPY transaction
WARM_UP = 10
COUNTED = 5
MIN_TIMED = 30
MASS_TABLES = (
    "services_application",
    "services_timelineentry",
    "accounts_user",
    "qr_venuecode",
    "services_outboxevent",
    "services_delivery",
)


def size_label(n: int) -> str:
    exponent = math.log10(n) if n > 0 else 0.0
    return f"10^{exponent:.0f}" if exponent.is_integer() else f"{n:,}"


# --- Requests in process -------------------------------------------------------------------------

Request = tuple[str, dict[str, str]]  # (path with query, headers); all GET


def wsgi_call(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One GET through the WSGI application gunicorn serves (``config.wsgi``:
    the fast paths, then Django's handler with all its middleware)."""
    from config.wsgi import application

    url = urlsplit(path)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": url.path,
        "QUERY_STRING": url.query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for name, value in headers.items():
        environ[f"HTTP_{name.upper().replace('-', '_')}"] = value
    status: list[str] = []

    def start_response(
        line: str, response_headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        status.append(line)
        return lambda data: None

    response = application(environ, start_response)
    body = b"".join(response)
    if hasattr(response, "close"):
        response.close()
    return int(status[0].split()[0]), body


# --- The city's real objects, made with the project's own functions ------------------------------


@dataclass(frozen=True)
class ServiceInfo:
    id: int
    code: str
    department_id: int
    department_code: str
    department_name: str
    fee_fen: int
    time_limit_days: int


@dataclass
class City:
    services: list[ServiceInfo]
    integrator_keys: list[str]  # one raw key per department
    endpoints: dict[int, list[uuid.UUID]]  # a department's endpoints, by its id
    scanner_key: str
    admin_cookie: str
    venue_kid: str
    venue_code_text: str


FILLER = "长沙市岳麓区麓山南路二段一号院三栋二单元五零一室附近"


def sample_form(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Plausible answers to a demo service's form (checked by the caller)."""
    form: dict[str, Any] = {}
    for name, spec in schema.get("properties", {}).items():
        if "enum" in spec:
            form[name] = rng.choice(spec["enum"])
        elif spec.get("type") == "integer":
            low, high = spec.get("minimum", 1), spec.get("maximum", 100000)
            form[name] = rng.randint(low, min(high, max(low, 5000)))
        elif spec.get("format") == "date":
            form[name] = (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(600))).isoformat()
        elif "1[3-9]" in spec.get("pattern", ""):
            form[name] = f"13{rng.randrange(10**9):09d}"
        elif "\\d{16,19}" in spec.get("pattern", ""):
            form[name] = f"6222{rng.randrange(10**15):015d}"
        else:
            low, high = spec.get("minLength", 0), spec.get("maxLength", 200)
            length = min(high, max(low, 12))
            form[name] = (FILLER * (length // len(FILLER) + 1))[:length]
    return form


def city_create(rng: random.Random) -> tuple[City, dict[int, list[str]]]:
    """Departments, catalog, keys, an operator, a few citizens who apply the
    real way, venue codes; and the form ciphertext pool of each service."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    from accounts import pii
    from accounts.api_keys import api_key_create
    from accounts.citizens import account_close, real_name_verify, user_set_active
    from accounts.departments import department_ensure
    from accounts.idnumber import check_char
    from accounts.models import ApiKey, ApiKeyScope, User
    from qr.venue_codes import venue_code_create, venue_code_deactivate
    from services.applications import application_department_update, application_submit
    from services.catalog import catalog_import, category_ensure
    from services.formschema import form_errors
    from services.management.commands.seed_demo import CATALOG_FILE, DEPARTMENTS
    from services.models import Service
    from services.routing import endpoints, events

    departments = []
    for code, name, name_en, phone in DEPARTMENTS:
        department, _created = department_ensure(
            code=code, name=name, name_en=name_en, contact_phone=phone
        )
        departments.append(department)
    catalog = json.loads(CATALOG_FILE.read_text(encoding="utf-8"))
    for category in catalog["categories"]:
        category_ensure(**category)
    catalog_import(catalog["services"], actor=None)

    operator = User.objects.create_superuser("bench-operator", secrets.token_urlsafe(24))
    keys: dict[int, tuple[ApiKey, str]] = {}
    for department in departments:
        keys[department.pk] = api_key_create(
            department=department, scope=ApiKeyScope.INTEGRATOR, name="bench", created_by=operator
        )
    _scanner, scanner_raw = api_key_create(
        department=departments[0], scope=ApiKeyScope.SCANNER, name="bench gate"
    )

    services = list(Service.objects.select_related("department").order_by("code"))
    forms: dict[int, list[str]] = {}
    for service in services:
        made = [sample_form(service.form_schema, rng) for _ in range(20)]
        for form in made:
            errors = form_errors(service.form_schema, form)
            if errors:
                raise RuntimeError(f"sample form for {service.code} refused: {errors}")
        forms[service.pk] = [pii.encrypt(json.dumps(form, ensure_ascii=False)) for form in made]

    # A few citizens the real way: phone account, real name, applications,
    # a department accepting one; one closes the account, one is suspended.
    real: list[User] = []
    for n in range(4):
        citizen = User(phone=f"1990000100{n}")
        citizen.set_unusable_password()
        citizen.save()
        first17 = f"43012419900307{n + 1:03d}"
        real.append(
            real_name_verify(user=citizen, name="张三", id_number=first17 + check_char(first17))
        )
    free = [s for s in services if not s.fee_fen and s.identity_level <= 2][:3]
    for citizen, service in zip(real, free, strict=False):
        application = application_submit(
            citizen=citizen, service=service, form=sample_form(service.form_schema, rng)
        )
        application_department_update(
            application=application,
            status="accepted",
            reference="REAL-1",
            api_key=keys[service.department_id][0],
        )
    account_close(user=real[2])
    user_set_active(user=real[3], active=False, actor=operator)
    venues = [
        venue_code_create(
            department=service.department, service=service, label=f"窗口 {i}", location="市民之家"
        )
        for i, service in enumerate(services[:4])
    ]
    venue_code_deactivate(venue=venues[0], actor=operator)
    # After the real applications: their deliveries would be due, with no
    # worker to send them.
    hooks: dict[int, list[uuid.UUID]] = {}
    for n, department in enumerate(departments):
        for k in range(2 if n == 0 else 1):
            endpoint, _secret = endpoints.endpoint_create(
                department=department,
                url=f"http://127.0.0.1:9/{department.code}/events/{k}",
                events=[events.APPLICATION_SUBMITTED, events.APPLICATION_CANCELLED],
                actor=None,
            )
            hooks.setdefault(department.pk, []).append(endpoint.pk)

    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore()
    session[SESSION_KEY] = str(operator.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = operator.get_session_auth_hash()
    session.save()

    city = City(
        services=[
            ServiceInfo(
                id=s.pk,
                code=s.code,
                department_id=s.department_id,
                department_code=s.department.code,
                department_name=s.department.name,
                fee_fen=s.fee_fen,
                time_limit_days=s.time_limit_days,
            )
            for s in services
        ],
        integrator_keys=[raw for _key, raw in keys.values()],
        endpoints=hooks,
        scanner_key=scanner_raw,
        admin_cookie=f"{settings.SESSION_COOKIE_NAME}={session.session_key}",
        venue_kid=venues[0].kid,
        venue_code_text=venues[1].code,
    )
    return city, forms


# --- The mass, by COPY ----------------------------------------------------------------------------


def uuid7_at(moment: dt.datetime, rng: random.Random) -> uuid.UUID:
    """A version-7 UUID for ``moment`` (as ``config.ids.uuid7`` makes them now)."""
    millis = int(moment.timestamp() * 1000)
    rand = rng.getrandbits(74)
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


class Copier:
    """``COPY <table> (<columns>) FROM STDIN`` for rows giving ``columns``
    (attribute names); every other column gets its field's default, so a
    field added to the model later does not break the load."""

    def __init__(self, model: Any, columns: list[str]) -> None:
        from django.db import connection
        from django.db.models.fields import AutoFieldMixin

        fields = {f.attname: f for f in model._meta.concrete_fields}
        unknown = set(columns) - set(fields)
        if unknown:
            raise RuntimeError(f"{model.__name__} has no {sorted(unknown)}")
        rest = [
            f
            for f in model._meta.concrete_fields
            if f.attname not in columns and not isinstance(f, AutoFieldMixin)
        ]
        self.extra = tuple(f.get_db_prep_save(f.get_default(), connection) for f in rest)
        names = ", ".join(f'"{fields[c].column}"' for c in columns) + "".join(
            f', "{f.column}"' for f in rest
        )
        self.sql = f'COPY "{model._meta.db_table}" ({names}) FROM STDIN'

    def write(self, cursor: Any, rows: list[tuple[Any, ...]]) -> None:
        with cursor.copy(self.sql) as copy:
            for row in rows:
                copy.write_row(row + self.extra)


REGIONS = ("430102", "430103", "430104", "430105", "430111", "430112", "430121", "430181")
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
)
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红梅文辉鹏宇浩然子涵欣怡"

# Application status by age: (bucket upper bound in days, [(status, weight), ...]).
STATUS_BY_AGE: list[tuple[float, list[tuple[str, float]]]] = [
    (
        30,
        [
            ("awaiting_payment", 0.06),
            ("submitted", 0.05),
            ("routed", 0.12),
            ("accepted", 0.38),
            ("needs_info", 0.08),
            ("completed", 0.20),
            ("rejected", 0.04),
            ("cancelled", 0.07),
        ],
    ),
    (
        90,
        [
            ("routed", 0.02),
            ("accepted", 0.20),
            ("needs_info", 0.05),
            ("completed", 0.58),
            ("rejected", 0.07),
            ("cancelled", 0.08),
        ],
    ),
    (
        math.inf,
        [
            ("accepted", 0.01),
            ("needs_info", 0.01),
            ("completed", 0.82),
            ("rejected", 0.08),
            ("cancelled", 0.08),
        ],
    ),
]

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)


@dataclass
class Loaded:
    citizens: int = 0
    applications: int = 0
    timeline: int = 0
    venue_codes: int = 0
    deactivated: int = 0
    events: int = 0
    deliveries: int = 0
    seconds: float = 0.0


class Loader:
    """Grows the city in place with realistic-looking citizens, applications,
    timelines, the departments' deliveries of their events, and venue codes."""

    def __init__(self, city: City, forms: dict[int, list[str]], dsn: str, seed: int) -> None:
        from django.db import connection
        from django.utils import timezone

        from accounts import pii
        from accounts.models import User
        from qr.models import VenueCode
        from services.models import (
            Application,
            ApplicationSerial,
            Delivery,
            OutboxEvent,
            TimelineEntry,
        )

        self.city, self.forms, self.dsn = city, forms, dsn
        self.rng = random.Random(seed)
        self.now = timezone.now()
        self.tz = timezone.get_current_timezone()
        self.loaded = Loaded()
        # Numbers of bulk applications continue the serial of real ones.
        last = ApplicationSerial.objects.order_by("-pk").values_list("pk", flat=True).first()
        self.serial = (last or 0) + 1000
        self.names = [
            pii.encrypt(self.rng.choice(SURNAMES) + "".join(self.rng.choices(GIVEN, k=2)))
            for _ in range(500)
        ]
        self.id_numbers = [
            pii.encrypt(self._id_number(self.rng.randrange(10**6))) for _ in range(500)
        ]
        self.empty_form = [pii.encrypt("{}") for _ in range(20)]
        # A batch's events and deliveries (rows for COPY), made with its applications.
        self.sent: list[tuple[Any, ...]] = []
        self.delivered: list[tuple[Any, ...]] = []
        payload = OutboxEvent._meta.get_field("data")
        self.event_data = [
            payload.get_db_prep_save(
                {"application": {"number": f"CS20240101{n:06d}", "status": "submitted"}},
                connection,
            )
            for n in range(20)
        ]
        self.unusable = "!" + secrets.token_urlsafe(30)  # as make_password(None) stores
        order = list(city.services)
        self.rng.shuffle(order)  # which services are popular
        self.services = order
        self.popularity = list(
            itertools.accumulate(1 / (rank + 1) ** 0.8 for rank in range(len(order)))
        )
        self.by_age = [
            (bound, [s for s, _w in table], list(itertools.accumulate(w for _s, w in table)))
            for bound, table in STATUS_BY_AGE
        ]
        self.due_dates: dict[tuple[dt.date, int], dt.date] = {}
        self.users = Copier(
            User,
            [
                "id",
                "password",
                "phone",
                "identity_level",
                "real_name",
                "id_number",
                "id_number_index",
                "real_name_verified_at",
                "subject",
                "is_active",
                "date_joined",
                "closed_at",
                "deactivated_at",
            ],
        )
        self.applications = Copier(
            Application,
            [
                "id",
                "number",
                "service_id",
                "department_id",
                "applicant_id",
                "status",
                "form",
                "fee_fen",
                "department_reference",
                "submitted_at",
                "accepted_at",
                "due_date",
                "paused_at",
                "closed_at",
                "rating_score",
                "rating_comment",
                "rated_at",
                "created_at",
                "updated_at",
            ],
        )
        self.timeline = Copier(
            TimelineEntry, ["application_id", "status", "at", "actor", "actor_label", "note"]
        )
        self.events = Copier(
            OutboxEvent,
            ["id", "type", "department_id", "application_id", "data", "created_at", "handled_at"],
        )
        self.deliveries = Copier(
            Delivery,
            [
                "id",
                "event_id",
                "endpoint_id",
                "department_id",
                "status",
                "attempt_count",
                "ordering_key",
                "sequence",
                "last_status_code",
                "last_attempt_at",
                "succeeded_at",
                "failed_at",
                "created_at",
            ],
        )
        self.venues = Copier(
            VenueCode,
            [
                "id",
                "department_id",
                "service_id",
                "label",
                "location",
                "jti",
                "kid",
                "code",
                "created_at",
                "deactivated_at",
            ],
        )

    @staticmethod
    def _id_number(i: int) -> str:
        from accounts.idnumber import check_char

        birth = dt.date(1950, 1, 1) + dt.timedelta(days=i % 20000)
        first17 = (
            f"{REGIONS[(i // 20_000_000) % len(REGIONS)]}{birth:%Y%m%d}{(i // 20000) % 1000:03d}"
        )
        return first17 + check_char(first17)

    def _due(self, accepted: dt.datetime, days: int) -> dt.date:
        from services.workdays import working_days_add

        start = accepted.astimezone(self.tz).date()
        key = (start, days)
        if key not in self.due_dates:
            self.due_dates[key] = working_days_add(start, days)
        return self.due_dates[key]

    def _until_now(self, moment: dt.datetime) -> dt.datetime:
        return min(moment, self.now - dt.timedelta(seconds=1))

    def _between(self, low: dt.timedelta, high: dt.timedelta) -> dt.timedelta:
        return low + (high - low) * self.rng.random()

    def _counts(self, citizens: int, applications: int) -> list[int]:
        """Applications per new citizen: about half none, the others 1 to 3,
        summing to ``applications`` exactly."""
        rng = self.rng
        counts = rng.choices((0, 1, 2, 3), weights=(0.45, 0.25, 0.15, 0.15), k=citizens)
        total = sum(counts)
        while total > applications:
            i = rng.randrange(citizens)
            if counts[i]:
                counts[i] -= 1
                total -= 1
        while total < applications:
            i = rng.randrange(citizens)
            if counts[i] < 3:
                counts[i] += 1
                total += 1
        return counts

    def grow_to(self, target: int) -> None:
        import psycopg
        from tqdm import tqdm

        started = time.monotonic()
        new_citizens = max(0, target - self.loaded.citizens)
        counts = self._counts(new_citizens, max(0, target - self.loaded.applications))
        with (
            psycopg.connect(self.dsn) as conn,
            tqdm(
                total=new_citizens,
                desc=f"loading up to {size_label(target)}",
                unit=" citizens",
                mininterval=2.0,
                file=sys.stderr,
            ) as bar,
        ):
            for start in range(0, new_citizens, BATCH):
                users: list[tuple[Any, ...]] = []
                applications: list[tuple[Any, ...]] = []
                entries: list[tuple[Any, ...]] = []
                self.sent, self.delivered = [], []
                for k in counts[start : start + BATCH]:
                    self._citizen(k, users, applications, entries)
                with conn.cursor() as cursor:
                    self.users.write(cursor, users)
                    self.applications.write(cursor, applications)
                    self.timeline.write(cursor, entries)
                    self.events.write(cursor, self.sent)
                    self.deliveries.write(cursor, self.delivered)
                conn.commit()
                self.loaded.applications += len(applications)
                self.loaded.timeline += len(entries)
                self.loaded.events += len(self.sent)
                self.loaded.deliveries += len(self.delivered)
                bar.update(len(users))
                bar.set_postfix(applications=self.loaded.applications, refresh=False)
            venues = [self._venue_code() for _ in range(target // 200 - self.loaded.venue_codes)]
            with conn.cursor() as cursor:
                self.venues.write(cursor, venues)
                cursor.execute(
                    "SELECT setval(pg_get_serial_sequence('services_applicationserial', 'id'), %s)",
                    (self.serial,),
                )
            conn.commit()
        self.loaded.venue_codes += len(venues)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"VACUUM (ANALYZE) {', '.join(MASS_TABLES)}")
        self.loaded.seconds += time.monotonic() - started

    def _citizen(
        self,
        k: int,
        users: list[tuple[Any, ...]],
        applications: list[tuple[Any, ...]],
        entries: list[tuple[Any, ...]],
    ) -> None:
        rng, now = self.rng, self.now
        i = self.loaded.citizens
        self.loaded.citizens += 1
        times = sorted(now - HISTORY * rng.random() for _ in range(k))
        if times:
            joined = times[0] - self._between(MINUTE, 200 * DAY)
        else:
            joined = now - HISTORY * 1.5 * rng.random()
        phone = f"1{3 + i % 7}{i:09d}"
        roll = rng.random()
        closed = roll < 0.01
        suspended = 0.01 <= roll < 0.015
        verified = not closed and (k > 0 or rng.random() < 0.7)
        deactivated_at = closed_at = None
        if closed or suspended:
            last = times[-1] if times else joined
            deactivated_at = last + (now - last) * rng.random()
            closed_at = deactivated_at if closed else None
            self.loaded.deactivated += 1
        citizen_id = uuid7_at(joined, rng)
        label = "" if closed else f"{phone[:3]}****{phone[-4:]}"
        users.append(
            (
                citizen_id,
                self.unusable,
                None if closed else phone,
                2 if verified else 1,
                rng.choice(self.names) if verified else "",
                rng.choice(self.id_numbers) if verified else "",
                self._blind_index(i) if verified else None,
                joined + self._between(MINUTE, DAY) if verified else None,
                f"s_{rng.getrandbits(96):024x}",
                not (closed or suspended),
                joined,
                closed_at,
                deactivated_at,
            )
        )
        for created in times:
            self._application(citizen_id, label, closed, created, applications, entries)

    def _blind_index(self, i: int) -> str:
        from accounts import pii

        return pii.blind_index(self._id_number(i), purpose="id_number")

    def _status(self, created: dt.datetime, fee: bool) -> str:
        age = (self.now - created) / DAY
        for bound, statuses, cumulative in self.by_age:
            if age <= bound:
                status = self.rng.choices(statuses, cum_weights=cumulative)[0]
                if status == "awaiting_payment" and not fee:
                    return "submitted"
                return status
        raise AssertionError("unreachable")

    def _application(
        self,
        citizen_id: uuid.UUID,
        label: str,
        closed_account: bool,
        created: dt.datetime,
        applications: list[tuple[Any, ...]],
        entries: list[tuple[Any, ...]],
    ) -> None:
        rng = self.rng
        service: ServiceInfo = rng.choices(self.services, cum_weights=self.popularity)[0]
        self.serial += 1
        application_id = uuid7_at(created, rng)
        number = f"CS{created.astimezone(self.tz):%Y%m%d}{self.serial:06d}"
        fee = service.fee_fen > 0
        status = self._status(created, fee)
        dept = service.department_name
        steps: list[tuple[str, dt.datetime, str, str, str]] = []
        submitted_at = routed_at = accepted_at = paused_at = closed_at = rated_at = None
        due_date = rating = None
        reference = comment = ""
        if fee:
            steps.append(("awaiting_payment", created, "citizen", label, ""))
            if status == "cancelled" and rng.random() < 0.5:  # withdrawn before paying
                closed_at = self._until_now(created + self._between(10 * MINUTE, 2 * DAY))
                steps.append(("cancelled", closed_at, "citizen", label, ""))
            elif status != "awaiting_payment":
                submitted_at = self._until_now(created + self._between(MINUTE, 2 * HOUR))
                steps.append(("submitted", submitted_at, "system", "", "已缴费"))
        else:
            submitted_at = created
            steps.append(("submitted", created, "citizen", label, ""))
        if submitted_at is not None and status not in ("submitted", "awaiting_payment"):
            if status != "cancelled" or rng.random() < 0.7:
                routed_at = self._until_now(
                    submitted_at + self._between(dt.timedelta(seconds=2), MINUTE)
                )
                steps.append(("routed", routed_at, "system", "", "已送达办理部门"))
                if rng.random() < 0.7:
                    reference = f"{service.department_code.upper()}{self.serial:08d}"
            after = routed_at or submitted_at
            if status in ("accepted", "needs_info", "completed"):
                accepted_at = self._until_now(after + self._between(HOUR, 3 * DAY))
                due_date = self._due(accepted_at, service.time_limit_days)
                steps.append(("accepted", accepted_at, "department", dept, ""))
            if status == "needs_info" and accepted_at is not None:
                paused_at = self._until_now(accepted_at + self._between(HOUR, 5 * DAY))
                steps.append(("needs_info", paused_at, "department", dept, "请补充材料"))
            elif status == "completed" and accepted_at is not None:
                limit = max(1, service.time_limit_days) * 1.4 * DAY
                closed_at = self._until_now(accepted_at + self._between(HOUR, limit * 1.2))
                steps.append(("completed", closed_at, "department", dept, "已办结"))
                if rng.random() < 0.4:
                    rating = rng.choice((5, 5, 5, 5, 4, 4, 3, 2, 1))
                    rated_at = self._until_now(closed_at + self._between(HOUR, 3 * DAY))
                    comment = "" if closed_account or rng.random() < 0.7 else "办事效率高"
            elif status == "rejected":
                closed_at = self._until_now(after + self._between(HOUR, 5 * DAY))
                steps.append(("rejected", closed_at, "department", dept, "材料不符合要求"))
            elif status == "cancelled":
                closed_at = self._until_now(after + self._between(10 * MINUTE, 2 * DAY))
                steps.append(("cancelled", closed_at, "citizen", label, ""))
        form = rng.choice(self.empty_form if closed_account else self.forms[service.id])
        applications.append(
            (
                application_id,
                number,
                service.id,
                service.department_id,
                citizen_id,
                status,
                form,
                service.fee_fen,
                reference,
                submitted_at,
                accepted_at,
                due_date,
                paused_at,
                closed_at,
                rating,
                comment,
                rated_at,
                created,
                max(step[1] for step in steps) if rated_at is None else rated_at,
            )
        )
        for step_status, at, actor, actor_label, note in steps:
            entries.append((application_id, step_status, at, actor, actor_label, note))
        # What the department heard: the submission, and a withdrawal after it.
        if submitted_at is not None:
            self._event(service, application_id, "application.submitted", submitted_at, 1)
            if status == "cancelled" and closed_at is not None:
                self._event(service, application_id, "application.cancelled", closed_at, 2)

    def _event(
        self,
        service: ServiceInfo,
        application_id: uuid.UUID,
        event_type: str,
        at: dt.datetime,
        sequence: int,
    ) -> None:
        rng = self.rng
        event_id = uuid7_at(at, rng)
        self.sent.append(
            (
                event_id,
                event_type,
                service.department_id,
                application_id,
                rng.choice(self.event_data),
                at,
                at,
            )
        )
        for endpoint_id in self.city.endpoints[service.department_id]:
            roll = rng.random()
            status = "succeeded" if roll < 0.97 else "failed" if roll < 0.99 else "cancelled"
            attempts = {"succeeded": 1, "failed": 8, "cancelled": 0}[status]
            last = (
                at + self._between(dt.timedelta(seconds=1), 2 * DAY) if status == "failed" else at
            )
            self.delivered.append(
                (
                    uuid7_at(at, rng),
                    event_id,
                    endpoint_id,
                    service.department_id,
                    status,
                    attempts,
                    application_id,
                    sequence,
                    {"succeeded": 200, "failed": 503, "cancelled": None}[status],
                    self._until_now(last) if attempts else None,
                    at if status == "succeeded" else None,
                    self._until_now(last) if status == "failed" else None,
                    at,
                )
            )

    def _venue_code(self) -> tuple[Any, ...]:
        rng = self.rng
        service = rng.choice(self.services)
        created = self.now - HISTORY * rng.random()
        venue_id = uuid7_at(created, rng)
        deactivated = created + (self.now - created) * rng.random() if rng.random() < 0.3 else None
        return (
            venue_id,
            service.department_id,
            service.id,
            f"{service.department_name}窗口 {rng.randrange(1, 40)}",
            "长沙市民之家",
            str(venue_id),
            self.city.venue_kid,
            self.city.venue_code_text,
            created,
            deactivated,
        )


# --- What is measured ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadPath:
    key: str
    title: str
    in_goal: bool
    requests: Callable[[int], list[Request]]
    expect_rows: bool = True  # a sanity check on the counted answers


def sample_applications(n: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``n`` random applications of active citizens: (id, applicant id)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.id, a.applicant_id FROM services_application a "
            "JOIN accounts_user u ON u.id = a.applicant_id "
            "WHERE u.is_active ORDER BY random() LIMIT %s",
            [n],
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def bearer(user_id: uuid.UUID) -> dict[str, str]:
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User

    return {"Authorization": f"Bearer {AccessToken.for_user(User(id=user_id))}"}


def paths(city: City, rng: random.Random) -> list[ReadPath]:
    def citizen_list(n: int) -> list[Request]:
        sample = sample_applications(n)
        return [("/api/v1/applications/", bearer(applicant)) for _id, applicant in sample]

    def detail(n: int) -> list[Request]:
        sample = sample_applications(n)
        return [(f"/api/v1/applications/{aid}/", bearer(applicant)) for aid, applicant in sample]

    def dept(query: str, listed: str = "applications") -> Callable[[int], list[Request]]:
        def make(n: int) -> list[Request]:
            keys = city.integrator_keys
            return [
                (
                    f"/api/v1/dept/{listed}/{query}",
                    {"Authorization": f"Api-Key {keys[i % len(keys)]}"},
                )
                for i in range(n)
            ]

        return make

    def overdue(n: int) -> list[Request]:
        return [
            ("/admin/services/application/?deadline=overdue", {"Cookie": city.admin_cookie})
        ] * n

    def revocations(n: int) -> list[Request]:
        from django.utils import timezone

        now = timezone.now()
        made = []
        for _ in range(n):
            since = (now - dt.timedelta(seconds=rng.uniform(60, 3600))).isoformat()
            made.append(
                (
                    f"/api/v1/qr/revocations/?since={quote(since)}",
                    {"Authorization": f"Api-Key {city.scanner_key}"},
                )
            )
        return made

    return [
        ReadPath("list", "citizen's list  GET /applications/", True, citizen_list),
        ReadPath("detail", "detail  GET /applications/{id}/", True, detail),
        ReadPath("dept", "dept list  ?status=accepted", True, dept("?status=accepted")),
        ReadPath("overdue", "overdue  admin ?deadline=overdue", True, overdue),
        ReadPath(
            "revocations", "revocations  GET /qr/revocations/?since=", True, revocations, False
        ),
        ReadPath(
            "deliveries", "dept deliveries  GET /dept/deliveries/", True, dept("", "deliveries")
        ),
        ReadPath(
            "dead_letters",
            "dept deliveries  ?status=failed",
            True,
            dept("?status=failed", "deliveries"),
            False,
        ),
        ReadPath("dept_all", "(extra) dept list, no status", False, dept("")),
        ReadPath(
            "dept_unpaid",
            "(extra) dept list ?status=awaiting_payment",
            False,
            dept("?status=awaiting_payment"),
            False,
        ),
    ]


@dataclass
class Statement:
    sql: str
    short: str
    explains: dict[int, tuple[float, str]] = field(default_factory=dict)  # size → (ms, plan)


@dataclass
class Measured:
    p50: float
    p95: float
    n: int
    counts: list[int]
    statements: list[Statement]


def reads_mass(sql: str) -> bool:
    text = sql.lstrip().upper()
    return text.startswith("SELECT") and any(f'"{t.upper()}"' in text for t in MASS_TABLES)


def explain(sql: str) -> tuple[float, str]:
    """Best of 3 ``EXPLAIN (ANALYZE, BUFFERS)``: execution ms and the last plan."""
    from django.db import connection

    best, plan = math.inf, ""
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            lines = [row[0] for row in cursor.fetchall()]
        plan = "\n".join(lines)
        found = re.search(r"Execution Time: ([\d.]+) ms", plan)
        best = min(best, float(found.group(1)) if found else math.nan)
    return best, plan


def measure_path(path: ReadPath, size: int, requests: int, budget: float) -> Measured:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    made = path.requests(WARM_UP + COUNTED + requests)
    warm, counted, timed = (
        made[:WARM_UP],
        made[WARM_UP : WARM_UP + COUNTED],
        made[WARM_UP + COUNTED :],
    )
    for target, headers in warm:
        check(path, target, *wsgi_call(target, headers))
    counts, statements = [], []
    for k, (target, headers) in enumerate(counted):
        with CaptureQueriesContext(connection) as captured:
            status, body = wsgi_call(target, headers)
        check(path, target, status, body, rows=path.expect_rows)
        sqls = [q["sql"] for q in captured.captured_queries]
        counts.append(len(sqls))
        if k == 0:
            statements = [Statement(sql=s, short=describe_sql(s)) for s in sqls]
    for statement in statements:
        if reads_mass(statement.sql):
            statement.explains[size] = explain(statement.sql)
    times: list[float] = []
    deadline = time.perf_counter() + budget
    for target, headers in timed:
        started = time.perf_counter()
        status, body = wsgi_call(target, headers)
        times.append((time.perf_counter() - started) * 1000)
        check(path, target, status, body)
        if len(times) >= MIN_TIMED and time.perf_counter() > deadline:
            break
    p95 = statistics.quantiles(times, n=20)[18] if len(times) >= 20 else max(times)
    return Measured(statistics.median(times), p95, len(times), counts, statements)


def check(path: ReadPath, target: str, status: int, body: bytes, rows: bool = False) -> None:
    if status != 200:
        raise RuntimeError(f"{target} answered {status}: {body[:500]!r}")
    if rows and path.key != "overdue":
        data = json.loads(body)
        if not (data.get("results") or data.get("id")):
            raise RuntimeError(f"{target} answered no rows: {body[:300]!r}")


def table_counts() -> dict[str, int]:
    from django.db import connection

    result = {}
    with connection.cursor() as cursor:
        for table in MASS_TABLES:
            cursor.execute(f'SELECT count(*), pg_total_relation_size(%s) FROM "{table}"', [table])
            rows, size = cursor.fetchone()
            result[table] = rows
            result[f"{table} MB"] = size // 2**20
        cursor.execute(
            "SELECT count(*) FROM services_application WHERE status = 'accepted' AND due_date < %s",
            [dt.date.today()],
        )
        result["overdue"] = cursor.fetchone()[0]
    return result


# --- Report ---------------------------------------------------------------------------------------

PLAN_NODE = re.compile(
    r"((?:Parallel )?(?:Seq Scan|Index Only Scan|Index Scan(?: Backward)?|Bitmap Heap Scan|"
    r"Bitmap Index Scan|Incremental Sort|Sort|HashAggregate|GroupAggregate|Aggregate|Hash Join|"
    r"Nested Loop|Merge Join|Unique|Limit|Gather(?: Merge)?))(?: using (\w+))?(?: on (\w+))?"
)


def abbreviated(sql: str) -> str:
    """The statement on one line, a long select list elided (the clauses are what matter)."""
    text = " ".join(sql.split())
    found = re.match(r'SELECT (DISTINCT )?(.*?) FROM "', text)
    if found and len(found.group(2)) > 160:
        text = (
            f"SELECT {found.group(1) or ''}<{found.group(2).count(', ') + 1} columns> "
            + text[found.end() - 6 :]
        )
    return text[:3000] + (" …" if len(text) > 3000 else "")


def plan_summary(plan: str) -> str:
    """The plan's nodes, outermost first, on one line."""
    nodes: list[str] = []
    for line in plan.splitlines():
        head = line.split("  (cost=")[0]
        if nodes and "->" not in head:
            continue  # a node's details (Filter:, Buffers: …), or the footer
        found = PLAN_NODE.search(head)
        if found:
            node, index, table = found.groups()
            nodes.append(node + (f" {index}" if index else f" on {table}" if table else ""))
    return " > ".join(nodes)


def plan_flags(statement: Statement, sizes: list[int]) -> list[str]:
    flags = []
    _ms, plan = statement.explains[sizes[-1]]
    for table in MASS_TABLES:
        if re.search(rf"Seq Scan on {table}\b", plan):
            flags.append(f"seq scan on {table}")
    removed = [int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)]
    if removed and max(removed) > 1000:
        flags.append(f"{max(removed)} rows removed by filter")
    sorts = re.findall(r"Sort Method: ([\w-]+(?: \w+)?)\s+(?:Disk|Memory): (\d+)kB", plan)
    for method, kb in sorts:
        if int(kb) > 512 or method.startswith("external"):
            flags.append(f"sort ({method}, {kb} kB)")
    first = statement.explains.get(sizes[0])
    last = statement.explains[sizes[-1]]
    if first and last[0] > GOAL * first[0] and last[0] - first[0] > 0.3:
        flags.append(f"{last[0] / first[0]:.1f}x slower")
    return flags


def report(
    args: argparse.Namespace,
    sizes: list[int],
    results: dict[str, dict[int, Measured]],
    all_paths: list[ReadPath],
    loads: dict[int, Loaded],
    counts: dict[int, dict[str, int]],
    elapsed: float,
    tree: str,
) -> bool:
    first, last = sizes[0], sizes[-1]
    ratio_label = f"{size_label(last)} ÷ {size_label(first)}"
    print()
    print("=" * 110)
    print(
        f"scale benchmark: in-process WSGI (config.wsgi, DEBUG=0), PostgreSQL + Redis; "
        f"{os.cpu_count()} CPUs; p50 / p95 ms over up to {args.requests} requests per path "
        f"and size (n below)"
    )
    print()
    print("data loaded (cumulative):")
    for size in sizes:
        c, load = counts[size], loads[size]
        print(
            f"  {size_label(size):>6}: {c['accounts_user']:>9,} users, "
            f"{c['services_application']:>9,} applications ({c['overdue']:,} overdue), "
            f"{c['services_timelineentry']:>9,} timeline entries, "
            f"{c['qr_venuecode']:>6,} venue codes, {load.deactivated:,} closed/suspended, "
            f"{c['services_delivery']:>9,} deliveries of {c['services_outboxevent']:,} events; "
            f"{sum(c[f'{t} MB'] for t in MASS_TABLES):,} MB with indexes; "
            f"load time so far {load.seconds:.0f} s"
        )
    print()
    width = 44
    header = f"{'path':<{width}}" + "".join(f"{size_label(s):>22}" for s in sizes)
    header += f"{'SQL/request':>16}{ratio_label:>16}{'≤ 1.5?':>8}"
    print(header)
    print(
        f"{'':<{width}}"
        + "".join(f"{'p50 / p95 ms (n)':>22}" for _ in sizes)
        + f"{'':>16}{'p50 (p95)':>16}"
    )
    print("-" * len(header))
    all_ok = True
    for path in all_paths:
        row = results[path.key]
        cells = "".join(f"{f'{row[s].p50:.1f} / {row[s].p95:.1f} ({row[s].n})':>22}" for s in sizes)
        per_size = [sorted(set(row[s].counts)) for s in sizes]
        same = all(c == per_size[0] for c in per_size) and len(per_size[0]) == 1
        sql = "/".join(",".join(map(str, c)) for c in per_size)
        sql += "" if same else " DIFF"
        p50_ratio = row[last].p50 / row[first].p50
        p95_ratio = row[last].p95 / row[first].p95
        ok = p50_ratio <= GOAL and same
        if path.in_goal:
            all_ok &= ok
        print(
            f"{path.title:<{width}}{cells}{sql:>16}"
            f"{f'{p50_ratio:.2f} ({p95_ratio:.2f})':>16}{'yes' if ok else 'NO':>8}"
        )
    print(
        "(SQL/request: statements per request at each size, as CaptureQueriesContext lists "
        "them, the set seen over 5 requests;\n verdict: p50 ratio ≤ 1.5 and one same count at "
        "every size; the (extra) rows are not part of the goal)"
    )

    print()
    print(
        "each path's statements (one request); for those reading the mass tables, EXPLAIN "
        "ANALYZE execution ms at each size (best of 3) and the plan's nodes at the largest"
    )
    printed: list[tuple[ReadPath, Statement, list[str]]] = []
    for path in all_paths:
        statements = results[path.key][last].statements
        earlier = {s: results[path.key][s].statements for s in sizes}
        print(f"  {path.title}:")
        mass = [(i, st) for i, st in enumerate(statements) if st.explains]
        slowest = max(mass, key=lambda pair: pair[1].explains[last][0])[0] if mass else -1
        for i, statement in enumerate(statements):
            if not statement.explains:
                print(f"    {i + 1:>2}. {statement.short}")
                continue
            # The same statement (by position) at the earlier sizes.
            for s in sizes:
                if i < len(earlier[s]) and earlier[s][i].explains.get(s):
                    statement.explains.setdefault(s, earlier[s][i].explains[s])
            flags = plan_flags(statement, sizes)
            times = " / ".join(
                f"{statement.explains[s][0]:.2f}" if s in statement.explains else "-" for s in sizes
            )
            print(f"    {i + 1:>2}. {statement.short:<52} {times:>24} ms  {'; '.join(flags)}")
            print(f"        {plan_summary(statement.explains[last][1])}")
            if flags or i == slowest:
                printed.append((path, statement, flags))

    print()
    print(f"plans at {size_label(last)} (each path's slowest statement, and every flagged one):")
    for path, statement, flags in printed:
        print()
        print(f"--- {path.title}: {statement.short}" + (f"  [{'; '.join(flags)}]" if flags else ""))
        print(f"SQL: {abbreviated(statement.sql)}")
        print(statement.explains[last][1])

    print()
    print(f"code measured: {tree}")
    print(f"total time {elapsed:.0f} s (loading {loads[last].seconds:.0f} s)")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    return all_ok


# --- The run --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="citizens = applications, ascending")
    parser.add_argument(
        "--requests", type=int, default=300, help="timed requests per path and size"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds per path and size (at least 30 requests)",
    )
    parser.add_argument("--seed", type=int, default=20240501)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(sizes) or len(set(sizes)) != len(sizes) or sizes[0] < 1000:
        raise SystemExit("--sizes: ascending, distinct, at least 1000")
    started = time.monotonic()
    tree = tree_state()  # the code as it was when imported, whatever changes meanwhile

    # The departments' endpoints are on a local address (nothing is sent).
    with scratch_stack("scale", ROUTING_ALLOW_PRIVATE_ENDPOINTS="1") as stack:
        # The admin's pages need the static files' manifest (DEBUG=0): collected
        # into the stack's work directory, not the project's STATIC_ROOT.
        from django.conf import settings
        from django.core.management import call_command

        settings.STATIC_ROOT = str(stack.work / "static")
        call_command("collectstatic", interactive=False, verbosity=0)
        rng = random.Random(args.seed)
        log("the city's real objects (departments, catalog, keys, operator, a few citizens) …")
        city, forms = city_create(rng)
        loader = Loader(city, forms, stack.env["DATABASE_URL"], args.seed)
        all_paths = paths(city, rng)
        results: dict[str, dict[int, Measured]] = {p.key: {} for p in all_paths}
        loads: dict[int, Loaded] = {}
        counts: dict[int, dict[str, int]] = {}
        for size in sizes:
            log(f"growing to {size:,} citizens and applications …")
            loader.grow_to(size)
            loads[size] = Loaded(**vars(loader.loaded))
            counts[size] = table_counts()
            log(
                f"  loaded in {loads[size].seconds:.0f} s so far: "
                f"{counts[size]['services_application']:,} applications, "
                f"{counts[size]['services_timelineentry']:,} timeline entries"
            )
            for path in all_paths:
                measured = measure_path(path, size, args.requests, args.budget)
                results[path.key][size] = measured
                log(
                    f"  {path.title:<44} p50 {measured.p50:7.1f} ms, p95 {measured.p95:7.1f} ms "
                    f"(n={measured.n}), {sorted(set(measured.counts))} statements"
                )

    ok = report(args, sizes, results, all_paths, loads, counts, time.monotonic() - started, tree)
    return 0 if ok and not stack.redis_lost else 1


if __name__ == "__main__":
    sys.exit(main())
