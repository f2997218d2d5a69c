"""Contract tests for the pluggable edges: every SMS backend and identity
provider behaves as its base class promises.

Each test runs over every implementation the project ships, found from the
base class (tests.contracts.implementations), so a new gateway or provider
is under contract the moment it exists; its readers (how a test sees what it
sent) are the only thing a new implementation adds here."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone
from django.utils.module_loading import import_string

from accounts import sms
from accounts.identity import BaseIdentityProvider, IdentityCheck, SandboxIdentityProvider
from tests.accounts.factories import make_id_number
from tests.contracts import implementations

MESSAGE = sms.SmsMessage(
    to="13800138000", text="【我的长沙】您的登录验证码是 123456", sent_at=timezone.now()
)


def read_console(capsys, tmp_path) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("[sms]")]


def read_file(capsys, tmp_path) -> list[str]:
    path = tmp_path / "sms.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def read_locmem(capsys, tmp_path) -> list[str]:
    return [message.text for message in sms.outbox]


READERS = {
    sms.ConsoleBackend: read_console,
    sms.FileBackend: read_file,
    sms.LocmemBackend: read_locmem,
}


def test_every_sms_backend_has_a_reader_and_a_short_name(settings) -> None:
    assert set(READERS) == set(implementations(sms.BaseSmsBackend))
    named = {import_string(path) for path in settings.SMS_BACKENDS.values()}
    assert named == set(implementations(sms.BaseSmsBackend))


@pytest.fixture(params=sorted(READERS, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def backend(request, settings, tmp_path):
    settings.SMS_FILE_PATH = str(tmp_path / "sms.jsonl")
    settings.SMS_BACKEND = f"{request.param.__module__}.{request.param.__qualname__}"
    return sms.get_backend(), READERS[request.param]


def test_every_backend_delivers_the_text_verbatim_once_per_send(backend, capsys, tmp_path) -> None:
    gateway, read = backend
    assert isinstance(gateway, sms.BaseSmsBackend)
    gateway.send(MESSAGE)
    gateway.send(MESSAGE)
    delivered = read(capsys, tmp_path)
    assert len(delivered) == 2
    assert all(MESSAGE.text in line for line in delivered)


def test_file_backend_writes_one_json_line_per_message(settings, tmp_path) -> None:
    settings.SMS_FILE_PATH = str(tmp_path / "deep" / "sms.jsonl")
    settings.SMS_BACKEND = "file"
    sms.send_sms(to="13800138000", text="您好")
    [line] = (tmp_path / "deep" / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert set(record) == {"to", "text", "sent_at"}
    assert record["to"] == "13800138000"
    assert record["text"] == "【我的长沙】您好"
    assert dt.datetime.fromisoformat(record["sent_at"]).tzinfo is not None


def test_file_backend_reports_an_unwritable_path(settings, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings.SMS_FILE_PATH = str(blocker / "sms.jsonl")
    settings.SMS_BACKEND = "file"
    with pytest.raises(sms.SmsDeliveryError):
        sms.send_sms(to="13800138000", text="x")


def test_a_backend_can_be_named_by_dotted_path(settings) -> None:
    settings.SMS_BACKEND = "accounts.sms.LocmemBackend"
    assert isinstance(sms.get_backend(), sms.LocmemBackend)


PROVIDERS = implementations(BaseIdentityProvider)


def test_the_sandbox_is_among_the_providers() -> None:
    assert SandboxIdentityProvider in PROVIDERS


@pytest.mark.parametrize("provider_class", PROVIDERS, ids=lambda c: c.__name__)
def test_every_identity_provider_answers_with_a_reference(provider_class) -> None:
    provider: BaseIdentityProvider = provider_class()
    check = provider.verify(name="王小明", id_number=make_id_number(5))
    assert isinstance(check, IdentityCheck)
    assert isinstance(check.matched, bool)
    assert check.reference


@pytest.mark.parametrize("provider_class", PROVIDERS, ids=lambda c: c.__name__)
def test_every_identity_provider_is_deterministic_per_pair(provider_class) -> None:
    provider: BaseIdentityProvider = provider_class()
    first = provider.verify(name="王小明", id_number=make_id_number(5))
    assert provider.verify(name="王小明", id_number=make_id_number(5)).matched == first.matched


@pytest.mark.parametrize("provider_class", PROVIDERS, ids=lambda c: c.__name__)
def test_every_identity_provider_is_chosen_by_its_dotted_path(provider_class, settings) -> None:
    from accounts.identity import get_provider

    settings.IDENTITY_PROVIDER = f"{provider_class.__module__}.{provider_class.__qualname__}"
    assert type(get_provider()) is provider_class


def test_sandbox_matches_valid_numbers_and_refuses_the_999_series() -> None:
    provider = SandboxIdentityProvider()
    assert provider.verify(name="王小明", id_number=make_id_number(5)).matched
    assert not provider.verify(name="王小明", id_number=make_id_number(999)).matched


def test_sandbox_references_are_stable_per_pair() -> None:
    provider = SandboxIdentityProvider()
    a = provider.verify(name="王小明", id_number=make_id_number(5)).reference
    assert a == provider.verify(name="王小明", id_number=make_id_number(5)).reference
    assert a != provider.verify(name="王小红", id_number=make_id_number(5)).reference
