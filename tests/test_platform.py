"""The platform's promises: settings from env, problem details, docs, probes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.test import override_settings

from config.errors import ERROR_CODES
from tests.production import PRODUCTION, start_django

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("variable", ["SECRET_KEY", "FIELD_ENCRYPTION_KEY", "BLIND_INDEX_KEY"])
def test_production_refuses_to_start_with_a_development_secret(variable: str) -> None:
    from config.settings import base

    dev_values = {
        "SECRET_KEY": base.DEV_SECRET_KEY,
        "FIELD_ENCRYPTION_KEY": base.DEV_FIELD_ENCRYPTION_KEY,
        "BLIND_INDEX_KEY": base.DEV_BLIND_INDEX_KEY,
    }
    result = start_django({**PRODUCTION, variable: dev_values[variable]})
    assert result.returncode != 0
    assert "started" not in result.stdout
    assert f"{variable} is missing or is the development value" in result.stderr


def test_production_refuses_to_start_without_secret_key() -> None:
    env = dict(PRODUCTION)
    env.pop("SECRET_KEY")
    result = start_django(env)
    assert result.returncode != 0
    assert "SECRET_KEY is missing" in result.stderr


def test_production_starts_with_real_secrets_and_reads_file_variants(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(PRODUCTION["SECRET_KEY"][::-1] + "\n")
    env = dict(PRODUCTION)
    env.pop("SECRET_KEY")
    env["SECRET_KEY_FILE"] = str(secret_file)
    result = start_django(env)
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECRET_KEY", "short"),
        ("SECRET_KEY", "ab" * 40),  # long, but two distinct characters
        ("BLIND_INDEX_KEY", "Yb7Qp2Lm9"),
        ("FIELD_ENCRYPTION_KEY", "A" * 43 + "="),
    ],
)
def test_production_refuses_a_weak_secret(variable: str, value: str) -> None:
    result = start_django({**PRODUCTION, variable: value})
    assert result.returncode != 0
    assert f"{variable} is too weak for DEBUG=0" in result.stderr
    assert value not in result.stderr


def test_production_needs_an_sms_gateway_chosen() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "SMS_BACKEND"}
    result = start_django(env)
    assert result.returncode != 0
    assert "SMS_BACKEND is not set and DEBUG=0" in result.stderr
    # The console, printing phones and codes, only when chosen by name.
    assert start_django({**env, "SMS_BACKEND": "console"}).returncode == 0


def _deploy_check(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.base", **env_overrides})
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_deploy_check_is_clean_with_the_https_switches_on() -> None:
    https = {
        "SECURE_SSL_REDIRECT": "1",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
        "SECURE_HSTS_PRELOAD": "1",
    }
    result = _deploy_check({**PRODUCTION, **https})
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout + result.stderr
    # Without them, the two warnings README explains (TLS ends at the proxy).
    result = _deploy_check(PRODUCTION)
    output = result.stdout + result.stderr
    warnings = set(re.findall(r"security\.W\d+", output))
    assert warnings == {"security.W004", "security.W008"}, output


def test_a_malformed_encryption_key_is_named() -> None:
    result = start_django({**PRODUCTION, "FIELD_ENCRYPTION_KEY": "not-a-key"})
    assert result.returncode != 0
    assert "FIELD_ENCRYPTION_KEY must be url-safe base64 of 32 bytes" in result.stderr


def test_settings_follow_the_environment(settings) -> None:
    assert settings.TIME_ZONE == "Asia/Shanghai"
    assert settings.LANGUAGE_CODE == "zh-hans"
    assert [code for code, _ in settings.LANGUAGES] == ["zh-hans", "en"]
    if os.environ.get("REDIS_URL"):
        assert os.environ["REDIS_URL"] == settings.CELERY_BROKER_URL
        assert settings.CACHES["default"]["BACKEND"].endswith("RedisCache")
    else:
        assert settings.CELERY_BROKER_URL.startswith("filesystem://")
        assert settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")
    engine = settings.DATABASES["default"]["ENGINE"]
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        assert engine == "config.postgresql"
    else:
        assert engine == "django.db.backends.sqlite3"


# --- Problem details -------------------------------------------------------------------


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"/api/problems/{code}"
    assert set(body) >= {"type", "title", "status", "detail", "code", "errors"}
    return body


@pytest.mark.django_db
def test_unknown_api_route_is_a_problem_not_a_page(api) -> None:
    assert_problem(api.get("/api/v1/no-such-thing/"), 404, "not_found")
    assert_problem(api.post("/api/v2/", {}, format="json"), 404, "not_found")


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete", "options"])
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/applications/not-a-uuid/cancel/",
        "/api/v1/auth/otp",
        "/api/nothing",
        "/api/v1/dept/endpoints/xyz/test/",
    ],
)
def test_unknown_api_routes_are_404_problems_for_every_method(method, path) -> None:
    """As a browser or a client with cookies would call them: CSRF checks on."""
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    call = getattr(client, method)
    response = call(path) if method == "get" else call(path, "{}", content_type="application/json")
    assert_problem(response, 404, "not_found")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/problems/", "/api/problems/not_found"])
def test_problem_pages_answer_get_only(path) -> None:
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    assert client.get(path).status_code in (200, 404)
    response = client.post(path, "{}", content_type="application/json")
    assert_problem(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.django_db
def test_unknown_route_is_a_problem_even_in_debug(api, settings) -> None:
    settings.DEBUG = True
    assert_problem(api.get("/api/v1/no-such-thing/"), 404, "not_found")


@pytest.mark.django_db
def test_malformed_json_is_a_400_problem(api) -> None:
    response = api.post("/api/v1/auth/otp/", "{not json", content_type="application/json")
    assert_problem(response, 400, "malformed_request")


@pytest.mark.django_db
def test_a_json_array_where_an_object_belongs_is_a_400(api) -> None:
    response = api.post("/api/v1/auth/otp/", "[1, 2]", content_type="application/json")
    body = assert_problem(response, 400, "invalid")
    assert "non_field_errors" in body["errors"]


@pytest.mark.django_db
def test_missing_field_names_the_field(api) -> None:
    body = assert_problem(api.post("/api/v1/auth/token/", {}, format="json"), 400, "invalid")
    assert set(body["errors"]) == {"phone", "code"}


@pytest.mark.django_db
def test_wrong_type_is_a_400(api) -> None:
    body = assert_problem(
        api.post("/api/v1/auth/otp/", {"phone": {"nested": True}}, format="json"), 400, "invalid"
    )
    assert "phone" in body["errors"]


@pytest.mark.django_db
def test_form_encoded_body_is_refused_with_415(api) -> None:
    response = api.post(
        "/api/v1/auth/otp/", "phone=13800138000", content_type="application/x-www-form-urlencoded"
    )
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.django_db
def test_oversized_body_is_refused_before_parsing(api, settings) -> None:
    settings.API_MAX_BODY_BYTES = 1024
    body = json.dumps({"phone": "1" * 5000})
    assert_problem(
        api.post("/api/v1/auth/otp/", body, content_type="application/json"),
        413,
        "payload_too_large",
    )


@pytest.mark.django_db
def test_a_chunked_body_without_its_length_is_a_411_not_an_empty_body(api) -> None:
    """gunicorn hands a chunked body over without CONTENT_LENGTH, and Django
    reads such a body as empty: the client is told, not answered "field
    required". Through the served WSGI application (fast paths included) too."""
    from config.wsgi import application
    from tests.wsgi import environ_for, wsgi_call

    chunked = {"HTTP_TRANSFER_ENCODING": "chunked"}
    response = api.generic("POST", "/api/v1/auth/otp/", b"", "application/json", **chunked)
    assert_problem(response, 411, "length_required")
    for path in ("/api/v1/qr/verify/", "/api/v1/payments/notify/wechat/", "/api/v1/auth/otp/"):
        environ = environ_for(path, b'{"code": "MCS1:x"}', "application/json", **chunked)
        del environ["CONTENT_LENGTH"]
        status, headers, body = wsgi_call(application, environ)
        assert (status, json.loads(body)["code"]) == (411, "length_required"), path
    # With its length, a body is read whatever the transfer encoding said.
    fine = api.post("/api/v1/auth/otp/", {"phone": "12"}, format="json", **chunked)
    assert fine.json()["code"] == "phone_invalid"


@pytest.mark.django_db
def test_wrong_method_is_a_405_problem(api) -> None:
    assert_problem(api.get("/api/v1/auth/otp/"), 405, "method_not_allowed")


@pytest.mark.django_db
def test_titles_follow_accept_language(api) -> None:
    zh = api.post("/api/v1/auth/otp/", {"phone": "12"}, format="json")
    en = api.post("/api/v1/auth/otp/", {"phone": "12"}, format="json", HTTP_ACCEPT_LANGUAGE="en")
    assert zh.json()["title"] == "请输入有效的中国大陆手机号"
    assert en.json()["title"] == "Enter a valid mainland China mobile number"
    assert en.json()["code"] == zh.json()["code"] == "phone_invalid"


def test_every_error_code_has_an_english_title() -> None:
    from django.utils import translation

    missing = []
    for code, error in ERROR_CODES.items():
        with translation.override("en"):
            english = str(error.title)
        with translation.override("zh-hans"):
            chinese = str(error.title)
        if english == chinese:
            missing.append(code)
    assert missing == []


@pytest.mark.django_db
def test_problem_types_resolve_to_their_description(api) -> None:
    listing = api.get("/api/problems/").json()["results"]
    codes = {item["code"] for item in listing}
    assert {"otp_invalid", "identity_mismatch", "throttled", "not_found"} <= codes
    one = api.get("/api/problems/identity_mismatch", HTTP_ACCEPT_LANGUAGE="en").json()
    assert one["code"] == "identity_mismatch"
    assert one["status"] == 422
    assert one["title"] == "Name and ID number do not match"
    assert one["when"] and one["what_to_do"]  # the page itself: tests/test_api_docs.py
    assert_problem(api.get("/api/problems/no_such_code"), 404, "not_found")


# --- Schema and docs -----------------------------------------------------------------------


@pytest.mark.django_db
def test_openapi_schema_is_valid_and_warning_free() -> None:
    out = StringIO()
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out
    )
    schema = json.loads(out.getvalue())
    assert schema["openapi"].startswith("3.")
    otp = schema["paths"]["/api/v1/auth/otp/"]["post"]
    assert "phone_invalid" in otp["responses"]["400"]["description"]
    assert "application/problem+json" in otp["responses"]["429"]["content"]


@pytest.mark.django_db
def test_schema_and_docs_are_served(api) -> None:
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/me/" in schema.json()["paths"]
    docs = api.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


# --- Probes -------------------------------------------------------------------------------


def test_healthz_answers_without_touching_anything(api) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_database_and_broker(api, settings) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200, response.json()
    checks = {"database": "ok", "broker": "ok"} | ({"redis": "ok"} if settings.REDIS_URL else {})
    assert response.json() == {"status": "ok", "checks": checks}


@pytest.mark.django_db
def test_readyz_is_503_when_the_broker_is_unreachable(api) -> None:
    with override_settings(
        CELERY_BROKER_URL="redis://127.0.0.1:1/0", CELERY_BROKER_TRANSPORT_OPTIONS={}
    ):
        response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"] == "unavailable"
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.django_db
def test_readyz_asks_the_broker_once_in_a_while_not_on_every_probe(api, monkeypatch) -> None:
    """A broker that drops packets holds each check for its time-out: probes
    by anyone must not hold every web worker that long."""
    from config import health

    asked: list[str] = []
    monkeypatch.setattr(health, "_ask_broker", lambda url: asked.append(url) or "unavailable")
    monkeypatch.setattr(health, "_broker_checked", {})
    answers = [api.get("/readyz") for _ in range(5)]
    assert [a.status_code for a in answers] == [503] * 5
    assert len(asked) == 1
    monkeypatch.setattr(health, "BROKER_CHECK_SECONDS", 0.0)
    assert api.get("/readyz").status_code == 503
    assert len(asked) == 2


@pytest.mark.django_db
def test_a_probe_while_the_broker_is_being_asked_does_not_wait_for_it(api, monkeypatch) -> None:
    import threading

    from config import health

    asking, answer = threading.Event(), threading.Event()

    def slow(url: str) -> str:
        asking.set()
        assert answer.wait(10)
        return "ok"

    monkeypatch.setattr(health, "_ask_broker", slow)
    monkeypatch.setattr(health, "_broker_checked", {})
    first = threading.Thread(target=health._check_broker)
    first.start()
    assert asking.wait(10)
    try:
        # Nothing kept yet: unavailable, at once, while the first one asks.
        assert api.get("/readyz").json()["checks"]["broker"] == "unavailable"
    finally:
        answer.set()
        first.join(10)
    assert api.get("/readyz").json()["checks"]["broker"] == "ok"


@pytest.mark.django_db
def test_readyz_is_503_when_the_database_is_unreachable(api, monkeypatch) -> None:
    from django.db import connections

    def refuse(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(connections["default"], "cursor", refuse)
    response = api.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "unavailable"


def test_every_text_marked_in_the_code_has_its_english() -> None:
    """Each ``_("…")`` (and the other gettext calls) with a literal text in
    the project's code is in the English catalog, translated: a text added
    without running ``make messages`` would reach English clients in Chinese."""
    import ast

    import polib

    po = polib.pofile(str(ROOT / "locale" / "en" / "LC_MESSAGES" / "django.po"))
    translated = {entry.msgid for entry in po.translated_entries()}
    calls = {"_", "gettext", "gettext_lazy", "pgettext", "pgettext_lazy", "ngettext"}
    missing: set[str] = set()
    found = 0
    for app in ("accounts", "config", "payments", "qr", "services"):
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and node.args):
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                first = node.args[1] if name.startswith("pgettext") else node.args[0]
                if name in calls and isinstance(first, ast.Constant):
                    found += 1
                    if isinstance(first.value, str) and first.value not in translated:
                        missing.add(f"{path.relative_to(ROOT)}: {first.value}")
    assert found > 500
    assert sorted(missing) == [], "run: make messages, then translate what it added"


@pytest.mark.parametrize("language", ["en", "zh_Hans"])
def test_compiled_translations_match_their_sources(language) -> None:
    """Every string of each catalog (ours in English; the libraries' admin
    labels in Chinese) is translated and compiled into its .mo."""
    import polib

    locale_dir = ROOT / "locale" / language / "LC_MESSAGES"
    po = polib.pofile(str(locale_dir / "django.po"))
    mo = {entry.msgid: entry.msgstr for entry in polib.mofile(str(locale_dir / "django.mo"))}
    assert po.untranslated_entries() == []
    assert po.fuzzy_entries() == []
    stale = [e.msgid for e in po.translated_entries() if mo.get(e.msgid) != e.msgstr]
    assert stale == [], f"run: python manage.py compilemessages -l {language}"


@pytest.mark.integration
def test_no_broker_message_outlives_its_visibility(settings) -> None:
    """Redis hands an unacknowledged message to another worker after the
    visibility timeout: every countdown and every task must end well before."""
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    # A batch task takes batches for up to its budget, the last one held
    # for up to a lease.
    longest_task = settings.ROUTING_BATCH_BUDGET_SECONDS + settings.ROUTING_LEASE_SECONDS
    assert settings.CELERY_MAX_COUNTDOWN + longest_task < visibility
    assert (
        max(settings.ROUTING_RETRY_SCHEDULE) > settings.CELERY_MAX_COUNTDOWN
    )  # longer waits: the sweeper


@pytest.mark.parametrize("member", ["type", "title", "status", "detail", "code", "errors", "x"])
def test_an_undeclared_extra_member_is_left_out_and_logged(member, caplog) -> None:
    """A member that would shadow a standard one, or that the schema does not
    document, never reaches the client; the problem still does (no 500)."""
    from config.errors import INVALID, DomainError, problem_body

    body = problem_body(INVALID, extra={member: "shadow", "current_status": "x"})
    assert body["current_status"] == "x"
    assert body.get(member) != "shadow"
    assert DomainError(INVALID, extra={member: "shadow"}).extra == {}
    assert [r.levelname for r in caplog.records].count("ERROR") == 2
    assert member in caplog.text


def test_every_extra_member_in_the_code_is_declared() -> None:
    """Each ``extra={...}`` written in the code names members the schema
    documents (PROBLEM_EXTENSIONS), none of them a standard member: caught
    here rather than left out at request time."""
    import ast

    from django.conf import settings

    from config.errors import PROBLEM_EXTENSIONS, PROBLEM_MEMBERS

    assert not PROBLEM_MEMBERS & PROBLEM_EXTENSIONS.keys()
    found: dict[str, set[str]] = {}
    for app in ("accounts", "config", "payments", "qr", "services"):
        for path in (settings.BASE_DIR / app).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                for keyword in node.keywords:
                    if keyword.arg == "extra" and isinstance(keyword.value, ast.Dict):
                        names = {k.value for k in keyword.value.keys if isinstance(k, ast.Constant)}
                        found.setdefault(str(path.relative_to(settings.BASE_DIR)), set()).update(
                            names
                        )
    used = set().union(*found.values())
    assert len(found) >= 6 and {"current_status", "retry_after"} <= used  # the scan sees them
    undeclared = {path: names - PROBLEM_EXTENSIONS.keys() for path, names in found.items()}
    assert {path: names for path, names in undeclared.items() if names} == {}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "accept", "status", "code"),
    [
        ("post", "/api/schema/", "*/*", 405, "method_not_allowed"),
        ("get", "/api/schema/", "text/html", 406, "not_acceptable"),
        ("get", "/api/schema/?format=xml", "*/*", 404, "not_found"),
        ("post", "/api/docs/", "*/*", 405, "method_not_allowed"),
        ("delete", "/api/redoc/", "*/*", 405, "method_not_allowed"),
        ("get", "/api/docs/", "application/json", 406, "not_acceptable"),
    ],
)
def test_the_schema_and_docs_refuse_as_json_problems(method, path, accept, status, code) -> None:
    """The schema (YAML by default) and the docs pages (HTML) render their
    own answers; a refusal is still problem JSON, as its Content-Type says,
    not YAML or the text "405 Method Not Allowed"."""
    from django.test import Client

    response = getattr(Client(), method)(path, HTTP_ACCEPT=accept)
    assert_problem(response, status, code)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "outage",
    [
        "redis.exceptions.ConnectionError",
        "redis.exceptions.TimeoutError",
        "django.db.utils.OperationalError",
        "django.db.utils.InterfaceError",
    ],
)
def test_a_dependency_that_is_down_is_a_503_not_a_500(api, monkeypatch, caplog, outage) -> None:
    """service_unavailable says "the database, Redis … cannot be reached":
    a login while Redis (its throttle's cache) or the database is down is
    answered so, with a Retry-After, and still logged with its traceback."""
    import logging

    from django.utils.module_loading import import_string

    from accounts import otp

    error = import_string(outage)

    def down(**kwargs):
        raise error("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(otp, "otp_send", down)
    with caplog.at_level(logging.ERROR):
        response = api.post("/api/v1/auth/otp/", {"phone": "13800138000"}, format="json")
    assert_problem(response, 503, "service_unavailable")
    assert int(response["Retry-After"]) > 0
    assert [r.exc_info is not None for r in caplog.records if r.name == "config.api"] == [True]


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["1234", "12345678", "password123", "li.clerk2026"])
def test_a_staff_account_is_not_given_a_weak_password(operator_client, department, password):
    """Staff accounts reach citizens' full personal data: the admin refuses
    a short, common, all-digit or username-like password (Django checks
    none unless AUTH_PASSWORD_VALIDATORS names its validators)."""
    from accounts.models import User

    response = operator_client.post(
        "/admin/accounts/user/add/",
        {
            "username": "li.clerk",
            "usable_password": "true",
            "password1": password,
            "password2": password,
            "is_staff": "on",
            "department": department.pk,
        },
    )
    assert response.status_code == 200
    assert not User.objects.filter(username="li.clerk").exists()
