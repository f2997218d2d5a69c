from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = _("账户与部门")

    def ready(self) -> None:
        from accounts import (
            citizen_data,
            citizens,
            errors,  # noqa: F401  (registers the error codes)
            idempotency,
            inbox,
            otp,
            selectors,
        )
        from accounts.models import AuditEntry, IdempotencyRecord, Message, OtpChallenge, User

        citizen_data.register(
            "profile", export=selectors.profile_export, erase=citizens.profile_erase, models=[User]
        )
        # After the profile, so that its erasure runs first, while the
        # phone that keys the codes is still there.
        citizen_data.register(
            "login_codes",
            export=selectors.login_codes_export,
            erase=otp.otp_challenges_erase,
            models=[OtpChallenge],
        )
        citizen_data.register(
            "messages",
            export=selectors.messages_export,
            erase=inbox.messages_erase,
            models=[Message],
        )
        # Stored answers to the citizen's POSTs, kept 24 h for retries: what
        # they repeat is in the other sections already.
        citizen_data.register(
            "idempotency_records",
            export=None,
            erase=idempotency.idempotency_records_erase,
            models=[IdempotencyRecord],
        )
        # The audit trail's entries about the citizen are shown, never
        # erased: the trail is append-only (who did what to an account must
        # outlive it; the entries name the account by its opaque id, and a
        # citizen's own by the masked phone of the time).
        citizen_data.register(
            "audit_trail",
            export=selectors.audit_trail_export,
            erase=None,
            models=[AuditEntry],
        )
