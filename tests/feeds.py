"""Walking a cursor-paginated list the way a client does: page after page by
its ``next`` link, then back by ``previous``."""

from __future__ import annotations

from typing import Any


def walk(client: Any, url: str, params: dict[str, Any] | None = None, *, key: str = "id") -> list:
    """Every item's ``key`` over all pages, following ``next`` from the first page."""
    seen: list = []
    page = _get(client, url, params)
    seen += [item[key] for item in page["results"]]
    while page["next"]:
        page = _get(client, page["next"])
        seen += [item[key] for item in page["results"]]
    return seen


def walk_back(
    client: Any, url: str, params: dict[str, Any] | None = None, *, key: str = "id"
) -> list:
    """Every item's ``key`` over all pages, following ``previous`` from the
    last page (reached by ``next``), in the list's order."""
    page = _get(client, url, params)
    while page["next"]:
        page = _get(client, page["next"])
    seen = [item[key] for item in page["results"]]
    while page["previous"]:
        page = _get(client, page["previous"])
        seen = [item[key] for item in page["results"]] + seen
    return seen


def _get(client: Any, url: str, params: dict[str, Any] | None = None) -> dict:
    response = client.get(url, params)
    assert response.status_code == 200, response.json()
    return response.json()
