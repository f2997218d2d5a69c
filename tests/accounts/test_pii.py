"""Personal data at rest: encryption with rotation, blind index, masking, logs."""

from __future__ import annotations

import logging
from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from hypothesis import given
from hypothesis import strategies as st

from accounts import pii
from accounts.models import User
from config import masking
from config.logging import MaskPiiFilter
from config.masking import mask_text


@given(st.text())
def test_encryption_round_trips_any_text(text) -> None:
    token = pii.encrypt(text)
    assert pii.decrypt(token) == text
    if len(text) >= 8:
        assert text not in token


def test_ciphertexts_differ_for_the_same_value() -> None:
    assert pii.encrypt("张三") != pii.encrypt("张三")


def test_old_values_decrypt_after_a_new_key_is_put_first(settings) -> None:
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    token = pii.encrypt("430102199003071234")
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    assert pii.decrypt(token) == "430102199003071234"
    assert not pii.is_current(token)
    assert pii.is_current(pii.encrypt("x"))


def test_a_value_without_its_key_is_a_clear_error(settings) -> None:
    token = pii.encrypt("secret")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(pii.PiiDecryptionError, match="FIELD_ENCRYPTION_KEY"):
        pii.decrypt(token)


@pytest.mark.django_db
def test_reencrypt_command_moves_rows_to_the_new_key(settings, citizen) -> None:
    from django.db import connection

    def raw_columns() -> tuple[str, str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT real_name, id_number FROM accounts_user WHERE id = %s",
                [citizen.pk.hex if connection.vendor == "sqlite" else citizen.pk],
            )
            return cursor.fetchone()

    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    assert not any(pii.is_current(value) for value in raw_columns())
    out = StringIO()
    call_command("reencrypt_pii", stdout=out)
    assert "accounts.User: re-encrypted 1 row(s)" in out.getvalue()
    assert all(pii.is_current(value) for value in raw_columns())
    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key can go now
    reloaded = User.objects.get(pk=citizen.pk)
    assert reloaded.real_name == "张三丰"
    assert reloaded.id_number == citizen.id_number


def test_blind_index_is_stable_keyed_and_purpose_bound(settings) -> None:
    a = pii.blind_index("430102199003071234", purpose="id_number")
    assert a == pii.blind_index("430102199003071234", purpose="id_number")
    assert a != pii.blind_index("430102199003071234", purpose="other")
    assert "430102199003071234" not in a
    settings.BLIND_INDEX_KEY = "another key"
    assert a != pii.blind_index("430102199003071234", purpose="id_number")


@pytest.mark.parametrize(
    ("value", "masked"),
    [("13800138000", "138****8000"), ("", ""), (None, ""), ("123", "***")],
)
def test_phone_mask(value, masked) -> None:
    assert masking.mask_phone(value) == masked


@pytest.mark.parametrize(
    ("value", "masked"), [("张三", "张*"), ("欧阳娜娜", "欧***"), ("王", "*"), ("", "")]
)
def test_name_mask(value, masked) -> None:
    assert masking.mask_name(value) == masked


def test_id_number_mask() -> None:
    assert masking.mask_id_number("43010219900307123X") == "430102********123X"


def test_log_lines_never_carry_a_full_phone_or_id_number() -> None:
    text = "login 13800138000 id 43010219900307123X order 2026112500001234567"
    masked = mask_text(text)
    assert "13800138000" not in masked and "43010219900307123X" not in masked
    assert "138****8000" in masked and "430102********123X" in masked
    assert "2026112500001234567" in masked  # longer digit runs are not phones


def test_the_configured_log_handler_masks_records() -> None:
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(MaskPiiFilter())
    logger = logging.getLogger("tests.pii")
    logger.addHandler(handler)
    try:
        logger.warning("sms to %s failed", "13800138000")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().strip() == "sms to 138****8000 failed"


def test_logging_settings_attach_the_mask_to_the_console(settings) -> None:
    assert "mask_pii" in settings.LOGGING["handlers"]["console"]["filters"]


@pytest.mark.django_db
def test_reencrypt_covers_every_encrypted_column_in_the_project(settings) -> None:
    """Signing keys, endpoint secrets, forms, payloads: after the command the
    old key can go and everything still opens."""
    from accounts.management.commands.reencrypt_pii import encrypted_columns
    from qr import keys
    from qr.models import SigningKey
    from services.models import Endpoint
    from services.routing import endpoints
    from tests.accounts.factories import DepartmentFactory

    covered = {model._meta.label: set(names) for model, names in encrypted_columns()}
    assert covered["accounts.User"] == {"real_name", "id_number"}
    assert covered["qr.SigningKey"] >= {"private_key"}
    assert covered["services.Endpoint"] == {"secret", "previous_secret"}
    assert {"services.Application", "services.OutboxEvent", "accounts.IdempotencyRecord"} <= set(
        covered
    )

    keys.signing_key_ensure()
    endpoint, secret = endpoints.endpoint_create(
        department=DepartmentFactory(),
        url="http://127.0.0.1:9/h",
        events=["application.submitted"],
        actor=None,
    )
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    call_command("reencrypt_pii", stdout=StringIO())
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]  # the old key is gone
    assert Endpoint.objects.get(pk=endpoint.pk).secret == secret
    assert all(key.private_key for key in SigningKey.objects.all())


def _log_through_the_configured_handler(emit) -> str:
    """What the project's console handler prints for the records ``emit`` makes."""
    from logging.config import dictConfig

    from django.conf import settings

    stream = StringIO()
    dictConfig(settings.LOGGING)
    handler = next(h for h in logging.getLogger().handlers if h.get_name() == "console")
    old_stream = handler.setStream(stream)
    try:
        emit(logging.getLogger("tests.pii"))
    finally:
        handler.setStream(old_stream)
    return stream.getvalue()


def test_exceptions_and_tracebacks_are_masked_too() -> None:
    def emit(logger: logging.Logger) -> None:
        try:
            raise ValueError(
                "duplicate key: (phone)=(13800138000) id 43010219900307123X "
                "{'real_name': '张三丰', \"name\": \"欧阳娜娜\"}"
            )
        except ValueError:
            logger.exception("submit failed for %s", "+8613900139000")
        logger.warning("stack", stack_info=True, extra={})

    output = _log_through_the_configured_handler(emit)
    assert "Traceback" in output and "ValueError" in output
    for secret in ("13800138000", "13900139000", "43010219900307123X", "张三丰", "欧阳娜娜"):
        assert secret not in output
    assert "138****8000" in output and "'real_name': '张**'" in output
    assert '"name": "欧***"' in output


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("real_name=张三", "real_name=张*"),
        ("Key (real_name)=(李四光) already exists", "Key (real_name)=(李**) already exists"),
        ("姓名：王小明", "姓名：王**"),
        ('{"applicant": {"name": "阿依古丽·买买提"}}', '{"applicant": {"name": "阿*******"}}'),
        ("service_code=sbk-apply", "service_code=sbk-apply"),
        ("tel 0086 138 0013 8000", "tel 0086 138****8000"),
    ],
)
def test_names_are_masked_where_a_key_says_they_are_names(text, masked) -> None:
    assert mask_text(text) == masked


def test_celery_workers_log_through_the_same_masked_handlers() -> None:
    from celery.signals import setup_logging

    from config import celery as celery_config

    receivers = [r() if callable(r) else r for _, r in setup_logging.receivers]
    assert celery_config._django_logging in receivers


def _project_handlers() -> list[tuple[str, logging.Handler]]:
    """Every handler on every logger after the project's logging is set up,
    but pytest's own capturing ones."""
    from logging.config import dictConfig

    from django.conf import settings
    from django.utils.log import DEFAULT_LOGGING

    # As Django's setup does: its defaults, then the project's LOGGING.
    dictConfig(DEFAULT_LOGGING)
    dictConfig(settings.LOGGING)
    loggers = [("root", logging.getLogger())] + [
        (name, logger)
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    ]
    return [
        (name, handler)
        for name, logger in loggers
        for handler in logger.handlers
        if not type(handler).__module__.startswith("_pytest")
        and not isinstance(handler, logging.NullHandler)  # prints nothing
    ]


def test_every_handler_the_project_configures_masks() -> None:
    from redis.utils import _set_info_logger

    _set_info_logger()  # what redis-py does when a client subscribes
    handlers = _project_handlers()
    assert handlers  # the console at least
    unmasked = [
        (name, handler)
        for name, handler in handlers
        if not any(isinstance(f, MaskPiiFilter) for f in handler.filters)
    ]
    assert unmasked == []


def test_django_request_errors_are_printed_once_and_masked() -> None:
    def emit(logger: logging.Logger) -> None:
        logging.getLogger("django.request").error("lookup 13800138000 failed")

    output = _log_through_the_configured_handler(emit)
    assert output.count("138****8000") == 1 and "13800138000" not in output


def test_gunicorn_logs_no_query_string_and_masks_its_own_lines() -> None:
    from config import gunicorn

    for item in ("%(r)s", "%(q)s", "%(f)s", "%(a)s"):
        assert item not in gunicorn.access_log_format
    assert "%(U)s" in gunicorn.access_log_format
    handlers = gunicorn.logconfig_dict["handlers"]
    assert all("mask_pii" in h["filters"] for h in handlers.values())
    assert gunicorn.logconfig_dict["filters"]["mask_pii"]["()"] == "config.logging.MaskPiiFilter"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hr.example.cn/hook", "https://hr.example.cn/hook"),
        ("https://hr.example.cn/hook?token=abc&v=2", "https://hr.example.cn/hook?token=***&v=***"),
        ("https://hr.example.cn/hook?s3cr3tT0ken", "https://hr.example.cn/hook?***"),
        ("https://hr.example.cn/hook?token%3Ds3cr3t", "https://hr.example.cn/hook?***"),
        ("https://hr.example.cn/hook?=s3cr3t&a=1", "https://hr.example.cn/hook?***&a=***"),
        ("https://hr.example.cn/hook?a=1&&b", "https://hr.example.cn/hook?a=***&&***"),
    ],
)
def test_a_urls_query_values_are_masked_and_odd_parts_whole(url, shown) -> None:
    from config.masking import mask_url_query

    assert mask_url_query(url) == shown


@pytest.mark.parametrize("size", [0, -1, 70_000])
def test_reencrypting_takes_batches_one_statement_can_name(size: int) -> None:
    """A batch's rows are named in one statement: 70,000 of them were more
    parameters than PostgreSQL takes in one (65,535) once it binds them, a
    failure halfway through the re-encryption; 0 made no batches at all."""
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--batch-size"):
        call_command("reencrypt_pii", batch_size=size, stdout=StringIO())
