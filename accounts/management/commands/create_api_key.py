from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.api_keys import api_key_create
from accounts.management.commands.create_department import checked_name
from accounts.models import ApiKey, ApiKeyScope, Department


class Command(BaseCommand):
    help = (
        "Create an API key for a department. The key is printed once, alone on the "
        "last line of output; only its hash is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("code", help="Department code")
        parser.add_argument("--scope", required=True, choices=[s.value for s in ApiKeyScope])
        parser.add_argument("--name", help="What the key is for (shown in admin)")

    def handle(self, *args, code: str, scope: str, name: str | None, **options) -> None:
        if name is not None:
            # Given, it says something: "" is a mistake (an unset variable).
            name = checked_name(
                name, argument="--name", max_length=ApiKey._meta.get_field("name").max_length or 100
            )
        # A code no department can have (a NUL, too long) is looked up by
        # no database: the same answer as an unknown one.
        code_length = Department._meta.get_field("code").max_length or 32
        department = None
        if "\x00" not in code and len(code) <= code_length:
            department = Department.objects.filter(code=code).first()
        if department is None:
            raise CommandError(f"no department with code {code!r}; run create_department first")
        key, raw = api_key_create(department=department, scope=scope, name=name or "")
        self.stdout.write(
            f"created {scope} key mcs_{key.prefix}_… for {department.code}; store it now:"
        )
        self.stdout.write(raw)
