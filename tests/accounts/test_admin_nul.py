"""A NUL character in an admin list's filter or the key picker's search is
a request no database can take (PostgreSQL refuses it in text): refused as
the admin refuses a lookup it does not allow (400), never a server error."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

LISTS = [
    ("accounts/message", "kind__exact"),
    ("services/application", "status__exact"),
    ("services/delivery", "status__exact"),
    ("payments/paymentorder", "status__exact"),
    ("payments/paymentorder", "channel__exact"),
    ("payments/refund", "status__exact"),
    ("payments/ledgerentry", "kind__exact"),
    ("payments/ledgerentry", "channel__exact"),
    ("payments/notifylog", "channel__exact"),
    ("payments/reconciliationmismatch", "kind__exact"),
    ("payments/reconciliationreport", "channel__exact"),
    ("qr/scanevent", "kind__exact"),
    ("payments/sandboxtrade", "state__exact"),
    ("payments/sandboxrefund", "state__exact"),
]


@pytest.mark.parametrize(("path", "lookup"), LISTS)
def test_a_nul_in_a_list_filter_is_a_bad_request(operator_client, path, lookup) -> None:
    assert operator_client.get(f"/admin/{path}/", {lookup: "a"}).status_code in (200, 302)
    response = operator_client.get(f"/admin/{path}/", {lookup: "\x00"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "Content-Security-Policy" in response


def test_a_nul_in_the_key_pickers_search_is_a_bad_request(operator_client) -> None:
    picker = {"app_label": "qr", "model_name": "scannerprofile", "field_name": "api_key"}
    assert (
        operator_client.get("/admin/autocomplete/", {**picker, "term": "闸机"}).status_code == 200
    )
    response = operator_client.get("/admin/autocomplete/", {**picker, "term": "a\x00"})
    assert response.status_code == 400


def test_a_nul_in_a_search_or_a_query_parameters_name_is_a_bad_request(operator_client) -> None:
    assert operator_client.get("/admin/payments/refund/", {"q": "\x00"}).status_code == 400
    assert operator_client.get("/admin/payments/refund/?st%00atus__exact=x").status_code == 400
