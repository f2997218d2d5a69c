from __future__ import annotations

import unicodedata

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from accounts.departments import department_ensure
from accounts.models import Department


def checked_name(value: str, *, argument: str, max_length: int) -> str:
    """``value`` without surrounding spaces, or a CommandError saying what
    is wrong with it: an operator's typo never reaches the database (which
    refuses a NUL or a name longer than its column with a traceback, or,
    SQLite, keeps it as typed)."""
    name = value.strip()
    if not name:
        raise CommandError(f"{argument} must not be empty")
    if len(name) > max_length:
        raise CommandError(f"{argument} must be at most {max_length} characters, not {len(name)}")
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise CommandError(
            f"{argument} must not contain control characters (NUL, line breaks, tabs)"
        )
    return name


class Command(BaseCommand):
    help = "Create a department, or rename it if the code exists (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("code", help="Short code, e.g. hrss")
        parser.add_argument("name", help='Display name, e.g. "长沙市人力资源和社会保障局"')

    def handle(self, *args, code: str, name: str, **options) -> None:
        code_length = Department._meta.get_field("code").max_length or 32
        if slugify(code) != code or len(code) > code_length:
            raise CommandError(
                f"CODE must be lowercase letters, digits, '-' or '_' (at most {code_length})"
            )
        name = checked_name(
            name, argument="NAME", max_length=Department._meta.get_field("name").max_length or 100
        )
        department, created = department_ensure(code=code, name=name)
        verb = "created" if created else "exists"
        self.stdout.write(f"{verb}: {department.code} {department.name}")
