from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from qr import keys, selectors


class Command(BaseCommand):
    help = (
        "Publish a new star-code signing key. It signs after QR_KEY_PUBLISH_AHEAD_SECONDS "
        "(scanners learn it first) unless --now; the old key stays in the JWKS until the "
        "codes it signed are no longer valid. The first key of an installation starts at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--now", action="store_true", help="Sign with the new key at once")
        parser.add_argument(
            "--withdraw-previous",
            action="store_true",
            help="Suspected compromise: pull every older key from the JWKS at once "
            "(implies --now; venue codes they signed must be replaced)",
        )

    def handle(self, *args, now: bool, withdraw_previous: bool, **options) -> None:
        first = selectors.signing_key_active() is None
        key = keys.signing_key_rotate(
            immediately=now or withdraw_previous or first, withdraw_previous=withdraw_previous
        )
        when = timezone.localtime(key.activates_at).isoformat(timespec="seconds")
        self.stdout.write(f"new signing key {key.kid}, signing from {when}")
        if not (now or withdraw_previous or first):
            self.stdout.write(
                f"(published now; signing starts in {settings.QR_KEY_PUBLISH_AHEAD_SECONDS} s)"
            )
        withdrawn = keys.signing_keys_prune()
        if withdrawn:
            self.stdout.write(f"withdrawn (no longer needed): {', '.join(withdrawn)}")
        if withdraw_previous:
            orphaned = selectors.venue_codes_signed_by_withdrawn_keys()
            for department, count in orphaned:
                self.stdout.write(f"  {department}: {count} venue code(s) must be replaced")
