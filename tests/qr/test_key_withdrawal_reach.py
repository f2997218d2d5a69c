"""A key withdrawn after a compromise (``rotate_signing_key --withdraw-previous``)
leaves every web process promptly: each looks at the key ring's version in
Redis at most once a second and reloads when it changed; the process that
withdrew forgets the key at once. Without Redis (one process in
development) the ring keeps its plain age bound."""

from __future__ import annotations

import json

import pytest

from qr import caches, codes, keys
from qr.models import SigningKey
from tests.qr.conftest import issue, verify


class SteppedClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += seconds


def kid_of(code: str) -> str:
    return json.loads(codes.b64url_decode(code[5:].split(".")[0]))["kid"]


def published_kids(api) -> set[str]:
    return {k["kid"] for k in api.get("/api/v1/qr/keys/").json()["keys"]}


@pytest.mark.django_db
def test_the_withdrawing_process_stops_using_the_key_at_once(citizen_api, scanner_api, api):
    old_code = issue(citizen_api)["code"]  # this process holds the first key
    withdrawn = kid_of(old_code)
    new = keys.signing_key_rotate(immediately=True, withdraw_previous=True)
    assert kid_of(issue(citizen_api)["code"]) == new.kid
    assert published_kids(api) == {new.kid}
    assert verify(scanner_api, old_code) == {"valid": False, "reason": "unknown_key"}
    assert withdrawn not in published_kids(api)


class FakeVersions:
    """The key ring's version as Redis would hold it, counting the reads."""

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.reads = 0

    def read(self) -> bytes | None:
        self.reads += 1
        return self.value

    def bump(self) -> None:
        self.value = str(int(self.value or 0) + 1).encode()


@pytest.fixture
def versions(monkeypatch) -> FakeVersions:
    fake = FakeVersions()
    monkeypatch.setattr(caches, "redis_enabled", lambda: True)
    monkeypatch.setattr(caches, "_keyring_version_read", fake.read)
    monkeypatch.setattr(caches, "_keyring_version_write", fake.bump)
    return fake


@pytest.mark.django_db
def test_another_process_drops_a_withdrawn_key_within_a_second_asking_once_a_second(
    versions, django_capture_on_commit_callbacks
):
    clock = SteppedClock()
    other = caches.KeyRing(clock=clock)  # another web process's ring
    first = keys.signing_key_ensure()
    assert other.signing_key()[0] == first.kid
    reads = versions.reads
    for _ in range(100):  # its hot paths, within the same second
        other.published()
        other.get(first.kid)
        other.signing_key()
    assert versions.reads == reads  # no more than once a second

    with django_capture_on_commit_callbacks(execute=True):
        new = keys.signing_key_rotate(immediately=True, withdraw_previous=True)
    clock.step(1.01)
    assert [k.kid for k in other.published()] == [new.kid]
    assert other.get(first.kid) is None
    assert other.signing_key()[0] == new.kid
    assert versions.reads == reads + 1  # looked at once, and the keys reloaded


@pytest.mark.django_db
def test_without_redis_the_ring_asks_for_no_version(monkeypatch, settings):
    settings.REDIS_URL = ""
    asked: list[int] = []
    monkeypatch.setattr(caches, "_keyring_version_read", lambda: asked.append(1))
    clock = SteppedClock()
    ring = caches.KeyRing(clock=clock)
    keys.signing_key_ensure()
    for _ in range(5):
        ring.published()
        clock.step(2)
    assert asked == []


@pytest.mark.integration  # the version in a real Redis, the withdrawal committed
@pytest.mark.django_db(transaction=True)
def test_a_withdrawal_made_in_another_process_reaches_this_one_within_a_second(
    citizen_api, scanner_api, api, monkeypatch
):
    clock = SteppedClock()
    monkeypatch.setattr(caches.keyring, "clock", clock, raising=False)
    old_code = issue(citizen_api)["code"]  # this process holds the first key
    withdrawn = kid_of(old_code)
    assert published_kids(api) == {withdrawn}
    # Another process runs the command: this process's own ring is not told.
    with monkeypatch.context() as other_process:
        other_process.setattr(caches.keyring, "clear", lambda: None)
        new = keys.signing_key_rotate(immediately=True, withdraw_previous=True)
    assert SigningKey.objects.get(kid=withdrawn).withdrawn_at is not None

    clock.step(1.01)
    assert kid_of(issue(citizen_api)["code"]) == new.kid
    assert published_kids(api) == {new.kid}
    assert verify(scanner_api, old_code) == {"valid": False, "reason": "unknown_key"}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_two_rings_see_the_withdrawal_through_real_redis(monkeypatch):
    clock = SteppedClock()
    this, other = caches.KeyRing(clock=clock), caches.KeyRing(clock=clock)
    first = keys.signing_key_ensure()
    assert this.signing_key()[0] == other.signing_key()[0] == first.kid
    monkeypatch.setattr(caches, "keyring", this)  # the withdrawing process's own ring
    new = keys.signing_key_rotate(immediately=True, withdraw_previous=True)
    assert [k.kid for k in this.published()] == [new.kid]  # at once
    clock.step(1.01)
    assert [k.kid for k in other.published()] == [new.kid]
    assert other.get(first.kid) is None


@pytest.mark.integration  # a real Redis
def test_a_version_lost_with_redis_never_comes_back_as_the_same_value():
    """A Redis restarted without persistence (or a replica that missed the
    last write) loses the version: the next change must not write the value
    a process still holds, or that process would keep a withdrawn key."""
    from config.redis_client import redis_client, redis_key

    key = redis_key(caches._VERSION_KEY)
    redis_client().delete(key)
    caches._keyring_version_write()
    held = caches._keyring_version_read()
    redis_client().delete(key)  # lost
    caches._keyring_version_write()
    assert caches._keyring_version_read() not in (None, held)
