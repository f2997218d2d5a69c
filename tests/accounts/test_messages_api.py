"""The citizen's inbox: what other apps tell them, in their language."""

from __future__ import annotations

import pytest
from django.utils.translation import gettext_lazy as _

from accounts.inbox import message_post

pytestmark = pytest.mark.django_db

INBOX = "/api/v1/me/messages/"


def post(user, n: int = 1) -> list:
    return [
        message_post(
            user=user,
            kind="test.notice",
            title=_("请求参数有误"),  # any translated string: it has an English version
            body="第 %(n)s 条",
            params={"n": i},
            data={"n": i},
        )
        for i in range(n)
    ]


def test_messages_are_rendered_in_every_language_once(citizen) -> None:
    [message] = post(citizen)
    assert message.title == {"zh-hans": "请求参数有误", "en": "Invalid request"}
    assert message.body == {"zh-hans": "第 0 条", "en": "第 0 条"}


def test_the_inbox_speaks_the_readers_language(citizen_api, citizen) -> None:
    post(citizen)
    zh = citizen_api.get(INBOX).json()["results"][0]
    en = citizen_api.get(INBOX, HTTP_ACCEPT_LANGUAGE="en").json()["results"][0]
    assert zh["title"] == "请求参数有误"
    assert en["title"] == "Invalid request"


def test_inbox_is_newest_first_and_pages_by_cursor(citizen_api, citizen) -> None:
    post(citizen, 25)
    first = citizen_api.get(INBOX).json()
    assert set(first) == {"results", "next", "previous"}
    assert len(first["results"]) == 20
    assert first["previous"] is None
    second = citizen_api.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert second["next"] is None
    numbers = [m["data"]["n"] for m in first["results"] + second["results"]]
    assert numbers == list(range(24, -1, -1))


def test_a_bad_cursor_is_a_400(citizen_api) -> None:
    response = citizen_api.get(INBOX, {"cursor": "not base64 at all!"})
    assert response.status_code == 400
    assert response.json()["code"] == "pagination_invalid"


def test_listing_the_inbox_costs_the_same_queries_for_many_messages(
    citizen_api, citizen, django_assert_max_num_queries
) -> None:
    post(citizen, 60)
    with django_assert_max_num_queries(3):  # user, page
        response = citizen_api.get(INBOX, {"page_size": 50})
    assert len(response.json()["results"]) == 50


def test_citizen_marks_a_message_read(citizen_api, citizen) -> None:
    [message] = post(citizen)
    assert citizen_api.get(INBOX, {"unread": "true"}).json()["results"][0]["id"] == str(message.id)
    response = citizen_api.post(f"{INBOX}{message.id}/read/")
    assert response.status_code == 200
    assert response.json()["is_read"] is True
    assert citizen_api.get(INBOX, {"unread": "true"}).json()["results"] == []
    # Marking again changes nothing.
    again = citizen_api.post(f"{INBOX}{message.id}/read/").json()
    assert again["read_at"] == response.json()["read_at"]


def test_citizen_marks_everything_read(citizen_api, citizen) -> None:
    post(citizen, 3)
    assert citizen_api.post(f"{INBOX}read-all/").json() == {"marked": 3}
    assert citizen_api.get(INBOX, {"unread": "1"}).json()["results"] == []


def test_citizen_cannot_read_another_citizens_messages(citizen_api, other_citizen) -> None:
    [theirs] = post(other_citizen)
    assert citizen_api.get(INBOX).json()["results"] == []
    response = citizen_api.post(f"{INBOX}{theirs.id}/read/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_a_malformed_message_id_is_a_404(citizen_api) -> None:
    response = citizen_api.post(f"{INBOX}not-a-uuid/read/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
