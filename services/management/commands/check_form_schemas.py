"""List the services whose stored form schema breaks the form rules
(``services.formschema.schema_problems``): remote or dangling references,
regexes RE2 cannot run, loops… Schemas saved before a rule existed are
never re-checked on save, and nobody can apply for such a service (409
``form_schema_unusable``) until its department fixes the form.

Exits 1 when any service is listed as unusable, so a deploy or a cron job
can alert. Formats that nothing checks (``duration``, ``iri``…, refused on
save since formats are checked) are named too: such a service takes
applications and those answers pass unchecked, so they do not fail the run.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from services.formschema import stored_schema_findings
from services.models import Service


class Command(BaseCommand):
    help = "List services whose form schema cannot be used; exit 1 if there are any."

    def handle(self, *args: Any, **options: Any) -> None:
        checked = offending = 0
        services = Service.objects.select_related("department").order_by("code")
        for service in services.iterator():
            checked += 1
            problems, unchecked = stored_schema_findings(service.form_schema)
            if not (problems or unchecked):
                continue
            offending += bool(problems)
            state = "active" if service.is_active else "inactive"
            self.stdout.write(f"{service.code} ({service.department.code}, {state})")
            for problem in problems:
                self.stdout.write(f"  {problem}")
            for format_ in unchecked:
                self.stdout.write(f"  {format_} (answers pass unchecked)")
        if offending:
            raise CommandError(f"{offending} of {checked} services have an unusable form schema")
        self.stdout.write(self.style.SUCCESS(f"{checked} form schemas checked, all usable"))
