"""A department's key that is not of the project's form (``mcs_`` then eight
hexadecimal digits, ``_``, the secret) is refused before anything is looked
up: a NUL or other stray character in its prefix is a 401, not a database
error."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

ENDPOINTS = "/api/v1/dept/endpoints/"
VERIFY = "/api/v1/qr/verify/"

MALFORMED = [
    "mcs_abc\x00defg_secret",
    "mcs_\x00\x00\x00\x00\x00\x00\x00\x00_secret",
    "mcs_DEADBEEF_secret",
    "mcs_dead beef_secret",
    "mcs_deadbee\u00e9_secret",
]


def with_key(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.mark.parametrize("raw", MALFORMED)
def test_a_malformed_key_on_a_departments_route_is_401(raw, integrator_key) -> None:
    response = with_key(raw).get(ENDPOINTS)
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_invalid"


@pytest.mark.parametrize("raw", MALFORMED)
def test_a_malformed_key_on_the_scanners_verify_is_401(raw, scanner_key) -> None:
    response = with_key(raw).post(VERIFY, {"code": "MCS1.x.y"}, format="json")
    assert response.status_code == 401
    assert response.json()["code"] == "api_key_invalid"


def test_keys_of_the_right_form_still_work(integrator_api, scanner_api) -> None:
    assert integrator_api.get(ENDPOINTS).status_code == 200
