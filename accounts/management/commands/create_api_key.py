from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.api_keys import api_key_create
from accounts.models import ApiKeyScope, Department


class Command(BaseCommand):
    help = (
        "Create an API key for a department. The key is printed once, alone on the "
        "last line of output; only its hash is stored."
    )

    def add_arguments(self, parser):
        parser.add_argument("code", help="Department code")
        parser.add_argument("--scope", required=True, choices=[s.value for s in ApiKeyScope])
        parser.add_argument("--name", default="", help="What the key is for (shown in admin)")

    def handle(self, *args, code: str, scope: str, name: str, **options) -> None:
        department = Department.objects.filter(code=code).first()
        if department is None:
            raise CommandError(f"no department with code {code!r}; run create_department first")
        key, raw = api_key_create(department=department, scope=scope, name=name)
        self.stdout.write(
            f"created {scope} key mcs_{key.prefix}_… for {department.code}; store it now:"
        )
        self.stdout.write(raw)
