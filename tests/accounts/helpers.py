"""Small steps that several account stories share."""

from __future__ import annotations

import re

from rest_framework.test import APIClient

from accounts import sms


def last_code_sent_to(phone: str) -> str:
    for message in reversed(sms.outbox):
        if message.to == phone:
            return re.search(r"\d{6}", message.text).group(0)
    raise AssertionError(f"no SMS was sent to {phone}")


def log_in(api: APIClient, phone: str = "13800138000") -> dict:
    """The whole login as the mobile app does it: ask for a code, send it back."""
    assert api.post("/api/v1/auth/otp/", {"phone": phone}, format="json").status_code == 202
    response = api.post(
        "/api/v1/auth/token/", {"phone": phone, "code": last_code_sent_to(phone)}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def bearer(api: APIClient, access: str) -> APIClient:
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return api
