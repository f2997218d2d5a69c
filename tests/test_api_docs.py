"""What a person opening the server in a browser finds: the landing page, the
API docs (Swagger UI and ReDoc, from our own static files: an offline
government network has no CDN) and one page per error code."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import translation

from config.errors import ERROR_CODES
from tests.processes import ROOT, configured_web_server

DOC_PAGES = ["/api/docs/", "/api/redoc/"]


class _Links(HTMLParser):
    """Every address a page makes the browser load or offer."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url", "action") and value:
                self.urls.append(value)


def links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


def static_paths(html: str) -> list[str]:
    return [url for url in links(html) if url.startswith("/static/")]


def assert_same_origin_only(html: str) -> None:
    """No address of another host anywhere in the page: not in a tag, not in
    an inline script (a CDN, a web font, Swagger's online validator)."""
    assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE) == []
    for url in links(html):
        assert url.startswith("/"), url


def assert_csp_allows_docs(response) -> None:
    """The pages run an inline script (Swagger UI's settings) and a worker from a
    blob (ReDoc): a Content-Security-Policy, if the project sends one, must allow them."""
    policy = response.headers.get("Content-Security-Policy")
    if policy is None:
        return
    directives: dict[str, str] = {}
    for part in policy.split(";"):
        name, _, sources = part.strip().partition(" ")
        directives[name] = sources
    scripts = directives.get("script-src", directives.get("default-src", "*"))
    assert "'self'" in scripts or "*" in scripts, policy
    assert "'unsafe-inline'" in scripts or "nonce-" in scripts, policy


@pytest.mark.django_db
@pytest.mark.parametrize("path", DOC_PAGES)
def test_api_docs_load_nothing_from_another_host(path) -> None:
    response = Client().get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert_same_origin_only(html)
    assert_csp_allows_docs(response)
    assert any(p.endswith(".js") for p in static_paths(html)), "the UI's script is ours"


@pytest.mark.django_db
@pytest.mark.parametrize("path", DOC_PAGES)
def test_every_static_file_the_docs_name_is_found(path) -> None:
    html = Client().get(path).content.decode()
    paths = static_paths(html)
    assert paths
    for url in paths:
        assert finders.find(url.removeprefix("/static/")), f"{url} is not among the static files"


@pytest.mark.django_db
def test_swagger_ui_asks_no_online_validator() -> None:
    html = Client().get("/api/docs/").content.decode()
    assert '"validatorUrl": null' in html


def _production_env(tmp_path: Path) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(48),
        "SMS_BACKEND": "file",
        "SMS_FILE_PATH": str(tmp_path / "sms.jsonl"),
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.mark.integration  # a real HTTP server, as the PostgreSQL pass runs them
@pytest.mark.timeout(180)
def test_api_docs_work_as_production_serves_them(tmp_path) -> None:
    """DEBUG=0: collectstatic (as ``make run`` does), gunicorn with WhiteNoise,
    every file the pages name answered from the manifest."""
    env = _production_env(tmp_path)
    env.pop("REDIS_URL", None)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    with configured_web_server(env, tmp_path / "web.log") as base:
        for page in DOC_PAGES:
            response = httpx.get(base + page, timeout=10)
            assert response.status_code == 200, response.text
            html = response.text
            assert_same_origin_only(html)
            assert_csp_allows_docs(response)
            paths = static_paths(html)
            assert paths
            for url in paths:
                served = httpx.get(base + url, timeout=10)
                assert served.status_code == 200, url
                assert len(served.content) > 0
                if url.endswith(".js"):
                    assert "javascript" in served.headers["content-type"]
                # WhiteNoise serves the manifest's hashed name: cached for good.
                assert "max-age" in served.headers.get("cache-control", ""), url
        landing = httpx.get(base + "/", timeout=10)
        assert landing.status_code == 200
        assert_same_origin_only(landing.text)
        in_the_browser(base)


def in_the_browser(base: str) -> None:
    """Chromium opens both UIs: each shows the API's operations, and what
    their bundles ask of another host (ReDoc's footer logo names one) is
    refused by the browser under the pages' policy, never sent."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            for page_path, shown in (
                ("/api/docs/", ".opblock"),
                ("/api/redoc/", "[data-section-id^='operation/']"),
            ):
                page = browser.new_page()
                elsewhere: list[tuple[str, str | None]] = []

                def failed(request, into=elsewhere) -> None:
                    if not request.url.startswith((base, "data:", "blob:")):
                        into.append((request.url, request.failure))

                def finished(request, into=elsewhere) -> None:
                    if not request.url.startswith((base, "data:", "blob:")):
                        into.append((request.url, "sent"))

                page.on("requestfailed", failed)
                page.on("requestfinished", finished)
                page.goto(base + page_path, wait_until="networkidle")
                page.wait_for_selector(shown, timeout=30_000)
                assert page.locator(shown).count() >= 60, page_path  # 65 operations
                # Chromium names the refusal "csp" (net::ERR_BLOCKED_BY_CSP).
                assert all(
                    (why or "").lower() in ("csp", "net::err_blocked_by_csp")
                    for _, why in elsewhere
                ), elsewhere
                page.close()
        finally:
            browser.close()


# --- Problem pages ---------------------------------------------------------------------------


def test_every_error_code_says_when_it_happens_and_what_to_do_in_both_languages() -> None:
    missing = []
    for code, error in sorted(ERROR_CODES.items()):
        for field in ("when", "what_to_do"):
            text = getattr(error, field)
            with translation.override("zh-hans"):
                chinese = str(text)
            with translation.override("en"):
                english = str(text)
            if not chinese.strip() or not re.search(r"[\u4e00-\u9fff]", chinese):
                missing.append(f"{code}.{field}: no Chinese text")
            if not english.strip() or english == chinese or re.search(r"[\u4e00-\u9fff]", english):
                missing.append(f"{code}.{field}: no English translation")
    assert missing == []


@pytest.mark.django_db
@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_a_problem_page_shows_when_and_what_to_do(code) -> None:
    error = ERROR_CODES[code]
    client = Client()
    for language in ("zh-hans", "en"):
        with translation.override(language):
            when, what_to_do, title = str(error.when), str(error.what_to_do), str(error.title)
        as_json = client.get(f"/api/problems/{code}", HTTP_ACCEPT_LANGUAGE=language)
        assert as_json["Content-Type"] == "application/json"
        assert as_json.json() == {
            "code": code,
            "status": error.status,
            "title": title,
            "when": when,
            "what_to_do": what_to_do,
        }
        as_html = client.get(
            f"/api/problems/{code}",
            HTTP_ACCEPT="text/html,application/xhtml+xml,*/*;q=0.8",
            HTTP_ACCEPT_LANGUAGE=language,
        )
        assert as_html["Content-Type"].startswith("text/html")
        assert "Accept" in as_html["Vary"]
        page = as_html.content.decode()
        for text in (when, what_to_do):
            # As the page sets it: escaped, `code` spans as <code>.
            shown = re.sub(r"`([^`]+)`", r"<code>\1</code>", _escape(text))
            assert shown in page, text
        assert _escape(title) in page


def _escape(text: str) -> str:
    from django.utils.html import escape

    return str(escape(text))


@pytest.mark.django_db
def test_the_problem_list_links_every_code() -> None:
    client = Client()
    listing = client.get("/api/problems/").json()["results"]
    assert [item["code"] for item in listing] == sorted(ERROR_CODES)
    assert all(item["when"] and item["what_to_do"] for item in listing)
    page = client.get("/api/problems/", HTTP_ACCEPT="text/html").content.decode()
    for code in ERROR_CODES:
        assert f'href="/api/problems/{code}"' in page


@pytest.mark.django_db
def test_unknown_problem_pages_are_404_problems_for_browsers_too() -> None:
    response = Client().get("/api/problems/no_such_code", HTTP_ACCEPT="text/html")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


# --- The landing page ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_landing_page_links_docs_errors_admin_and_health() -> None:
    client = Client()
    response = client.get("/")
    assert response.status_code == 200
    targets = set(links(response.content.decode()))
    assert {
        "/api/docs/",
        "/api/redoc/",
        "/api/schema/",
        "/api/problems/",
        "/admin/",
        "/healthz",
        "/readyz",
    } <= targets
    for target in targets:
        assert client.get(target).status_code in (200, 302), target  # the admin asks to log in


@pytest.mark.django_db
def test_the_landing_page_speaks_english_when_asked() -> None:
    page = Client().get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "API docs (Swagger UI)" in page
    assert '<html lang="en">' in page


@pytest.mark.django_db
def test_the_landing_page_answers_only_reads() -> None:
    assert Client().post("/").status_code == 405


@pytest.mark.django_db
def test_the_admins_view_site_link_opens_the_landing_page(admin_client) -> None:
    page = admin_client.get("/admin/").content.decode()
    assert re.search(r'<a href="/">[^<]*</a>', page), "no View site link to /"
    assert admin_client.get("/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/admin/login/",
        "/admin/",
        "/admin/accounts/user/",
        "/admin/accounts/user/add/",
        "/admin/services/service/add/",
        "/admin/accounts/apikey/add/",
        "/admin/password_change/",
        "/admin/django_celery_beat/periodictask/add/",
        "/api/problems/",
        "/api/problems/not_found",
    ],
)
def test_every_page_we_serve_tells_the_browser_to_load_nothing_from_another_host(
    operator, path
) -> None:
    """Not only the docs: the admin (where operators read what citizens and
    departments wrote) and the error code pages carry a
    Content-Security-Policy, so an injected tag or a library naming another
    host loads nothing; and, as these pages run no inline script (the docs
    do), one that runs none either: an escaping slip is no XSS."""
    client = Client()
    if path != "/admin/login/":
        client.force_login(operator)
    response = client.get(path, HTTP_ACCEPT="text/html")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    policy = dict(
        part.strip().partition(" ")[::2]
        for part in response.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["form-action"] == "'self'"
    # A browser obeys frame-ancestors over X-Frame-Options: both say no frame.
    assert response["X-Frame-Options"] == "DENY"
    assert policy["frame-ancestors"] == "'none'"
    scripts = re.findall(r"<script\b([^>]*)>", html)
    inline = [a for a in scripts if "src=" not in a and 'type="application/json"' not in a]
    assert inline == [], "an inline script"
    assert not re.search(r"\son[a-z]+=", html), "an inline event handler"
    # The admin's inline icons name SVG's namespace, which nothing loads.
    html = re.sub(r'xmlns(?::\w+)?="http://www\.w3\.org/[^"]*"', "", html)
    assert re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE) == []
    for url in links(html):  # here, or relative to here ("#content-start", "?q=")
        assert not re.match(r"[a-z][a-z0-9+.-]*:|//", url, re.IGNORECASE), url


@pytest.mark.django_db
def test_django_error_pages_for_developers_keep_their_script_with_debug_on(
    operator, settings
) -> None:
    """DEBUG=1 (make run): Django's technical error page runs inline script
    (its traceback's toggles); with DEBUG off every error page has the
    policy."""
    client = Client(raise_request_exception=False)
    client.force_login(operator)
    settings.DEBUG = True
    shown = client.get("/admin/no-such-page/", HTTP_ACCEPT="text/html")
    assert shown.status_code == 404 and "Content-Security-Policy" not in shown.headers
    settings.DEBUG = False
    shown = client.get("/admin/no-such-page/", HTTP_ACCEPT="text/html")
    assert shown.status_code == 404 and "Content-Security-Policy" in shown.headers
