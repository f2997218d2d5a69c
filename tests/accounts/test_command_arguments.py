"""An operator's mistyped argument to create_department or create_api_key
gets a sentence saying what is wrong, and nothing is stored: never a
database's traceback (PostgreSQL), never a value cut or kept as typed
(SQLite keeps a name longer than its column)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey, Department

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_a_department_name_of_100_characters_is_taken() -> None:
    assert run("create_department", "hrss", "局" * 100)[-1].startswith("created")
    assert Department.objects.get(code="hrss").name == "局" * 100


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("局" * 101, "at most 100 characters"),
        ("人社\x00局", "control characters"),
        ("人社\n局", "control characters"),
    ],
    ids=["too-long", "nul", "newline"],
)
def test_a_bad_department_name_is_refused(name, says) -> None:
    with pytest.raises(CommandError, match=f"NAME .*{says}"):
        run("create_department", "hrss", name)
    assert not Department.objects.filter(code="hrss").exists()


def test_renaming_to_a_name_too_long_leaves_the_name(department) -> None:
    with pytest.raises(CommandError, match="at most 100 characters"):
        run("create_department", department.code, "局" * 101)
    department.refresh_from_db()
    assert len(department.name) <= 100


@pytest.mark.parametrize("code", ["hr\x00ss", "h" * 33])
def test_a_bad_department_code_is_refused(code) -> None:
    with pytest.raises(CommandError, match="CODE"):
        run("create_department", code, "长沙市人社局")
    assert not Department.objects.exists()


def test_a_key_without_a_name_is_made(department) -> None:
    assert run("create_api_key", department.code, "--scope", "scanner")[-1].startswith("mcs_")
    assert ApiKey.objects.get(department=department).name == ""


def test_a_key_name_of_100_characters_is_taken(department) -> None:
    run("create_api_key", department.code, "--scope", "scanner", "--name", "闸" * 100)
    assert ApiKey.objects.get(department=department).name == "闸" * 100


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("闸" * 101, "at most 100 characters"),
        ("地铁\x00闸机", "control characters"),
    ],
    ids=["empty", "blank", "too-long", "nul"],
)
def test_a_bad_key_name_is_refused(department, name, says) -> None:
    with pytest.raises(CommandError, match=f"--name .*{says}"):
        run("create_api_key", department.code, "--scope", "scanner", "--name", name)
    assert not ApiKey.objects.exists()


@pytest.mark.parametrize("code", ["hr\x00ss", "h" * 33, ""])
def test_a_key_for_a_code_no_department_can_have_is_refused(department, code) -> None:
    with pytest.raises(CommandError, match="department"):
        run("create_api_key", code, "--scope", "scanner")
    assert not ApiKey.objects.exists()
