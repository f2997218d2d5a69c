"""``/api/schema/`` is generated once per language in each process: it only
changes with a deploy, and anyone may ask for it as often as they like."""

from __future__ import annotations

from unittest import mock

import pytest
from drf_spectacular.generators import SchemaGenerator

from config import openapi
from tests.conftest import client_for

JSON = "application/vnd.oai.openapi+json"


@pytest.fixture
def generated():
    """The schemas generated (the full work), each as its language asked."""
    openapi.forget_schemas()
    made: list[dict] = []
    original = SchemaGenerator.get_schema

    def spy(self, *args, **kwargs):
        schema = original(self, *args, **kwargs)
        made.append(schema)
        return schema

    with mock.patch.object(SchemaGenerator, "get_schema", spy):
        yield made
    openapi.forget_schemas()


def test_the_schema_is_generated_once_and_given_again(api, generated) -> None:
    first = api.get("/api/schema/", HTTP_ACCEPT=JSON)
    again = api.get("/api/schema/", HTTP_ACCEPT=JSON)
    as_yaml = api.get("/api/schema/")
    assert first.status_code == again.status_code == as_yaml.status_code == 200
    assert len(generated) == 1
    assert first.content == again.content
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi")
    assert b"/api/v1/me/" in as_yaml.content


def test_each_language_has_its_own_schema(api, generated) -> None:
    chinese = api.get("/api/schema/", HTTP_ACCEPT=JSON, HTTP_ACCEPT_LANGUAGE="zh-hans")
    english = api.get("/api/schema/", HTTP_ACCEPT=JSON, HTTP_ACCEPT_LANGUAGE="en")
    asked = api.get("/api/schema/?lang=en", HTTP_ACCEPT=JSON)
    assert len(generated) == 2
    assert chinese.content != english.content
    assert asked.content == english.content
    assert api.get("/api/schema/", HTTP_ACCEPT=JSON).content == chinese.content
    assert len(generated) == 2


def test_a_language_the_site_does_not_speak_is_the_closest_one_it_does(api, generated) -> None:
    """``?lang=`` takes any text: kept, each would be a schema kept forever;
    generated each time, the work the kept schema saves, for anyone."""
    chinese = api.get("/api/schema/", HTTP_ACCEPT=JSON).content
    english = api.get("/api/schema/?lang=en", HTTP_ACCEPT=JSON).content
    for lang in ("xx", "yy", "zz", "zh", "x1"):
        assert api.get(f"/api/schema/?lang={lang}", HTTP_ACCEPT=JSON).content == chinese
    assert api.get("/api/schema/?lang=en-us", HTTP_ACCEPT=JSON).content == english
    assert len(generated) == 2


def test_a_version_asked_for_is_not_another_schema(api, generated) -> None:
    """The API has one version, in its paths; ``?version=`` took any text,
    each generated and kept (about 3 MB) forever."""
    plain = api.get("/api/schema/", HTTP_ACCEPT=JSON).content
    for version in ("x0", "x1", "2.0", "v1"):
        assert api.get(f"/api/schema/?version={version}", HTTP_ACCEPT=JSON).content == plain
    assert len(generated) == 1
    assert len(openapi._schemas) == 1


def test_a_test_that_changes_the_urls_gets_their_schema(api, generated, settings) -> None:
    assert "/probe/citizen/" not in api.get("/api/schema/", HTTP_ACCEPT=JSON).json()["paths"]
    settings.ROOT_URLCONF = "tests.accounts.scope_urls"
    assert "/probe/citizen/" in api.get("/api/schema/", HTTP_ACCEPT=JSON).json()["paths"]
    settings.ROOT_URLCONF = "config.urls"
    assert "/probe/citizen/" not in api.get("/api/schema/", HTTP_ACCEPT=JSON).json()["paths"]


def test_the_host_asked_is_not_in_the_schema(api, generated) -> None:
    """Kept without the host in its key: nothing in it depends on the host."""
    api.get("/api/schema/", HTTP_ACCEPT=JSON, HTTP_HOST="one.example")
    openapi.forget_schemas()
    other = api.get("/api/schema/", HTTP_ACCEPT=JSON, HTTP_HOST="two.example:8443", secure=True)
    first, second = generated
    assert first == second
    assert b"two.example" not in other.content


@pytest.mark.django_db
def test_whoever_asks_gets_the_same_schema(api, generated, citizen, operator_client) -> None:
    """Kept without the caller in its key: nobody's schema is someone else's."""
    api.get("/api/schema/", HTTP_ACCEPT=JSON)
    openapi.forget_schemas()
    client_for(citizen).get("/api/schema/", HTTP_ACCEPT=JSON)
    openapi.forget_schemas()
    operator_client.get("/api/schema/", HTTP_ACCEPT=JSON)
    anonymous, as_citizen, as_operator = generated
    assert anonymous == as_citizen == as_operator
