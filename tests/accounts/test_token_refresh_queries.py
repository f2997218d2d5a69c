"""A refresh costs what it cost before the race with a suspension was
closed (measured at 6472887): the account is locked once, by the refresh,
and the pair is made under that lock, not in a nested transaction taking
it again (a savepoint, the lock's query, the release)."""

from __future__ import annotations

import pytest

from config.redis_client import redis_enabled
from tests.accounts.helpers import log_in

pytestmark = pytest.mark.django_db

REFRESH = "/api/v1/auth/token/refresh/"


def test_a_refresh_takes_no_more_statements_than_before_the_lock(
    api, django_assert_max_num_queries
) -> None:
    start = log_in(api)["refresh"]
    # The blacklist check, the transaction (here a savepoint and its
    # release), the account's lock, the token's row, its revocation mark
    # (read, then written), the new token's row; with Redis, the account's
    # facts the access token vouches for.
    budget = 8 + (1 if redis_enabled() else 0)
    with django_assert_max_num_queries(budget):
        response = api.post(REFRESH, {"refresh": start}, format="json")
    assert response.status_code == 200, response.json()
