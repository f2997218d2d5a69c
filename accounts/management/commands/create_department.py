from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.text import slugify

from accounts.departments import department_ensure


class Command(BaseCommand):
    help = "Create a department, or rename it if the code exists (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("code", help="Short code, e.g. hrss")
        parser.add_argument("name", help='Display name, e.g. "长沙市人力资源和社会保障局"')

    def handle(self, *args, code: str, name: str, **options) -> None:
        if slugify(code) != code or len(code) > 32:
            raise CommandError("CODE must be lowercase letters, digits, '-' or '_' (at most 32)")
        if not name.strip():
            raise CommandError("NAME must not be empty")
        department, created = department_ensure(code=code, name=name.strip())
        verb = "created" if created else "exists"
        self.stdout.write(f"{verb}: {department.code} {department.name}")
