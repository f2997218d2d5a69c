"""Every change of an application (办件): submit, the status machine,
cancel, supplement, rating, deadlines. Each change writes a timeline entry,
tells the citizen in their inbox, and publishes the event departments get."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone, translation
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from accounts.audit import audit_record
from accounts.errors import IDENTITY_LEVEL_TOO_LOW, AccountsError
from accounts.inbox import Post, messages_post, messages_prepared
from accounts.models import ApiKey, User
from config.errors import ACCOUNT_INACTIVE
from config.queries import rows_insert
from services import selectors
from services.errors import (
    FORM_INVALID,
    FORM_SCHEMA_UNUSABLE,
    INVALID_TRANSITION,
    RATING_NOT_ALLOWED,
    SERVICE_NOT_ONLINE,
    ServicesError,
)
from services.formschema import FormSchemaUnusable, form_errors
from services.models import (
    ActorKind,
    Application,
    ApplicationSerial,
    ApplicationStatus,
    Channel,
    OutboxEvent,
    Service,
    TimelineEntry,
)
from services.routing import events, outbox
from services.selectors import department_view
from services.workdays import working_days_add, working_days_between

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

logger = logging.getLogger(__name__)

S = ApplicationStatus

# Who may move an application from one status to another. Nothing else.
TRANSITIONS: dict[str, dict[str, set[str]]] = {
    S.AWAITING_PAYMENT: {S.SUBMITTED: {ActorKind.SYSTEM}, S.CANCELLED: {ActorKind.CITIZEN}},
    S.SUBMITTED: {
        S.ROUTED: {ActorKind.SYSTEM},
        S.ACCEPTED: {ActorKind.DEPARTMENT},
        S.REJECTED: {ActorKind.DEPARTMENT},
        S.CANCELLED: {ActorKind.CITIZEN},
    },
    S.ROUTED: {
        S.ACCEPTED: {ActorKind.DEPARTMENT},
        S.REJECTED: {ActorKind.DEPARTMENT},
        S.CANCELLED: {ActorKind.CITIZEN},
    },
    S.ACCEPTED: {
        S.NEEDS_INFO: {ActorKind.DEPARTMENT},
        S.COMPLETED: {ActorKind.DEPARTMENT},
        S.REJECTED: {ActorKind.DEPARTMENT},
    },
    S.NEEDS_INFO: {S.ACCEPTED: {ActorKind.CITIZEN}},
}
DEPARTMENT_TARGETS = (S.ACCEPTED, S.NEEDS_INFO, S.COMPLETED, S.REJECTED)
FINAL = (S.COMPLETED, S.REJECTED, S.CANCELLED)


# The platform's own notes on the timeline, by the step they mark. Stored
# in the platform's language, whichever language the request or worker that
# wrote them spoke, and shown in the reader's (timeline_note).
NOTE_PAID = _("已缴费")
NOTE_ROUTED = _("已送达办理部门")
NOTE_SUPPLEMENTED = _("已补正")
_PLATFORM_NOTES: dict[tuple[str, str], StrOrPromise] = {
    (ActorKind.SYSTEM, S.SUBMITTED): NOTE_PAID,
    (ActorKind.SYSTEM, S.ROUTED): NOTE_ROUTED,
    (ActorKind.CITIZEN, S.ACCEPTED): NOTE_SUPPLEMENTED,
}


def timeline_note(entry: TimelineEntry) -> str:
    """An entry's note as the reader sees it: the platform's own in the
    active language, what people wrote as they wrote it."""
    note = _PLATFORM_NOTES.get((entry.actor, entry.status))
    return str(note) if note is not None and entry.note else entry.note


def _stored(note: StrOrPromise) -> str:
    if isinstance(note, Promise):
        with translation.override(settings.LANGUAGE_CODE):
            return str(note)
    return note


def transition_allowed(current: str, target: str, actor: str) -> bool:
    return actor in TRANSITIONS.get(current, {}).get(target, set())


def _citizen_label(citizen: User) -> str:
    """How a citizen's own steps are labelled: the masked phone (an account
    that also has a username, staff logging in by SMS code, is not named by
    it)."""
    return citizen.phone_masked if citizen.phone else ""


def _move(
    application: Application,
    target: str,
    *,
    actor: str,
    actor_label: str = "",
    note: StrOrPromise = "",
    also: Iterable[str] = (),
) -> TimelineEntry:
    """The one place a status changes. ``application`` must be locked;
    ``also`` names other fields the caller changed, saved in the same UPDATE."""
    return _move_many(
        [application], target, actor=actor, actor_label=actor_label, note=note, also=also
    )[0]


def _move_many(
    applications: Sequence[Application],
    target: str,
    *,
    actor: str,
    actor_label: str = "",
    note: StrOrPromise = "",
    also: Iterable[str] = (),
) -> list[TimelineEntry]:
    """:func:`_move` for several applications, in one statement per table."""
    for application in applications:
        if not transition_allowed(application.status, target, actor):
            raise ServicesError(
                INVALID_TRANSITION,
                _("办件当前为“%(current)s”，不能变为“%(target)s”")
                % {"current": S(application.status).label, "target": S(target).label},
                extra={"current_status": application.status},
            )
    now = timezone.now()
    for application in applications:
        application.status = target
        if target in FINAL:
            application.closed_at = now
    fields = ["status", "closed_at", "updated_at", *also]
    if len(applications) == 1:
        applications[0].save(update_fields=fields)
    else:
        for application in applications:
            application.updated_at = now
        _update_each(applications, fields)
    stored_note = _stored(note)
    # One title, body and label for the batch: each is translated once per
    # language however many applications move.
    title = _("办件进度：%(status)s")
    body = _("您申请的“%(service)s”（%(number)s）状态已更新为：%(status)s。%(note)s")
    label = S(target).label
    entries = TimelineEntry.objects.bulk_create(
        [
            TimelineEntry(
                application=application,
                status=target,
                at=now,
                actor=actor,
                actor_label=actor_label,
                note=stored_note,
            )
            for application in applications
        ]
    )
    messages_post(
        [
            Post(
                user_id=application.applicant_id,
                kind="application.status",
                title=title,
                body=body,
                params={
                    "status": label,
                    "service": application.service.name,
                    "number": application.number,
                    "note": note,
                },
                data={
                    "application": str(application.id),
                    "number": application.number,
                    "status": target,
                },
            )
            for application in applications
        ]
    )
    return entries


def _update_each(applications: Sequence[Application], fields: Sequence[str]) -> None:
    """Write ``fields`` of each application as it holds them: one statement
    sent for all (executemany, pipelined by psycopg), where Django's
    ``bulk_update`` would build a CASE per field and row in Python first."""
    meta = Application._meta
    concrete = {f.name: f for f in meta.concrete_fields}
    columns = [concrete[name] for name in fields]
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        connection.ops.quote_name(meta.db_table),
        ", ".join(f"{connection.ops.quote_name(f.column)} = %s" for f in columns),
        connection.ops.quote_name(meta.pk.column),
    )
    rows = [
        [f.get_db_prep_save(getattr(a, f.attname), connection) for f in columns]
        + [meta.pk.get_db_prep_value(a.pk, connection)]
        for a in applications
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _locked(application: Application) -> Application:
    # of=("self",): lock the application row only. Without it PostgreSQL
    # also locks the joined citizen, service and department rows, and two
    # applications of one citizen moving at once deadlock.
    return (
        Application.objects.select_for_update(of=("self",))
        .select_related("service", "department", "applicant")
        .get(pk=application.pk)
    )


def _publish(application: Application, event_type: str, **extra: Any) -> None:
    outbox.event_publish(
        type=event_type,
        department=application.department,
        application=application,
        data={"application": department_view(application), **extra},
    )


def _new_number(now: dt.datetime) -> str:
    serial = ApplicationSerial.objects.create().pk
    return f"CS{timezone.localtime(now):%Y%m%d}{serial:06d}"


def _check_form(service: Service, form: Any) -> None:
    try:
        errors = form_errors(service.form_schema, form)
    except FormSchemaUnusable as exc:
        logger.warning("service %s: form schema unusable: %s", service.code, exc)
        raise ServicesError(
            FORM_SCHEMA_UNUSABLE, _("该事项的申请表暂不可用，请联系办理部门")
        ) from exc
    if errors:
        first = next(iter(errors))
        raise ServicesError(FORM_INVALID, f"{first}: {errors[first][0]}", errors=errors)


# --- Citizen ---------------------------------------------------------------------------------


def _hold_open_account(citizen: User) -> None:
    """The citizen's account is open, and stays open until this change
    commits: its row is locked first (``FOR NO KEY UPDATE``; SQLite's
    transactions take the write lock at their start), in the order
    :func:`accounts.citizens.account_close` takes its locks (the account,
    then its applications). A close that comes meanwhile waits for this
    change and then erases what it wrote; a change that comes after a close
    sees the account closed. Without it, a request that read the account
    just before the close would store the citizen's form, comment or reason,
    and send their identity to the department, after their data was erased
    (the new application's reference to the account locks nothing on
    PostgreSQL until the commit)."""
    if not _open_account(citizen):
        raise AccountsError(ACCOUNT_INACTIVE)


def _open_account(citizen: User) -> QuerySet[User, Any]:
    """The citizen's row while the account is open, to be locked as
    :func:`_hold_open_account` says."""
    return (
        User.objects.select_for_update(no_key=True)
        .filter(pk=citizen.pk, is_active=True, closed_at__isnull=True)
        .values("pk")
    )


def application_submit(*, citizen: User, service: Service, form: Any) -> Application:
    """Apply for ``service``. The form is checked against the service's
    schema and the citizen's identity level against the service's; the
    application and its ``application.submitted`` event are written in one
    transaction. Services with a fee wait for payment first. A service
    whose guide does not offer ``online`` takes no application here."""
    if Channel.ONLINE not in service.channels:
        raise ServicesError(SERVICE_NOT_ONLINE)
    if citizen.identity_level < service.identity_level:
        raise AccountsError(IDENTITY_LEVEL_TOO_LOW)
    _check_form(service, form)
    now = timezone.now()
    status = S.AWAITING_PAYMENT if service.fee_fen else S.SUBMITTED
    with transaction.atomic():
        application = Application(
            number=_new_number(now),
            service=service,
            department=service.department,
            applicant=citizen,
            status=status,
            form=form,
            fee_fen=service.fee_fen,
            created_at=now,
            submitted_at=now if status == S.SUBMITTED else None,
        )
        entry = TimelineEntry(
            application=application,
            status=status,
            at=now,
            actor=ActorKind.CITIZEN,
            actor_label=_citizen_label(citizen),
        )
        (message,) = messages_prepared(
            [
                Post(
                    user_id=citizen.pk,
                    kind="application.submitted",
                    title=_("申请已提交"),
                    body=_("您已提交“%(service)s”的申请，办件编号 %(number)s。%(next)s"),
                    params={
                        "service": service.name,
                        "number": application.number,
                        "next": _("请尽快完成缴费。")
                        if status == S.AWAITING_PAYMENT
                        else _("我们已通知办理部门。"),
                    },
                    data={
                        "application": str(application.id),
                        "number": application.number,
                        "status": status,
                    },
                )
            ]
        )
        publication = None
        if status == S.SUBMITTED:
            publication = outbox.event_prepare(
                type=events.APPLICATION_SUBMITTED,
                department=application.department,
                application=application,
                data={"application": department_view(application)},
                first_of_application=True,
            )
        # The account held open (see _hold_open_account) and every row
        # written in one statement on PostgreSQL.
        rows_insert(
            [[application], [entry], [message], *(publication.rows if publication else [])],
            held=_open_account(citizen),
            refused=AccountsError(ACCOUNT_INACTIVE),
        )
        if publication is not None:
            publication.written()
        selectors.timeline_known(application, [entry])
    return application


def application_cancel(*, citizen: User, application: Application, reason: str = "") -> Application:
    """Withdraw an application the department has not accepted yet. A paid
    one is refunded by the payments app, which listens for the event."""
    with transaction.atomic():
        _hold_open_account(citizen)
        application = _locked(application)
        department_knew = application.status in (S.SUBMITTED, S.ROUTED)
        _move(
            application,
            S.CANCELLED,
            actor=ActorKind.CITIZEN,
            actor_label=_citizen_label(citizen),
            note=reason,
        )
        outbox.event_publish(
            type=events.APPLICATION_CANCELLED,
            # The department hears of it only if it had heard of the application.
            department=application.department if department_knew else None,
            application=application,
            data={"application": department_view(application), "reason": reason},
        )
    return application


def application_supplement(*, citizen: User, application: Application, form: Any) -> Application:
    """Answer the department's request for more information (补正): the
    given fields replace the earlier answers, the whole form is checked
    again, and the clock that stopped at ``needs_info`` starts again."""
    with transaction.atomic():
        _hold_open_account(citizen)
        application = _locked(application)
        if application.status != S.NEEDS_INFO:
            raise ServicesError(
                INVALID_TRANSITION,
                _("只有待补正的办件可以补充材料"),
                extra={"current_status": application.status},
            )
        if not isinstance(form, dict):
            raise ServicesError(FORM_INVALID, errors={"form": [str(_("补正内容必须是对象"))]})
        if not form:
            # Nothing answered: the request for information stands.
            raise ServicesError(FORM_INVALID, errors={"form": [str(_("补正内容不能为空"))]})
        merged = {**application.form, **form}
        _check_form(application.service, merged)
        application.form = merged
        if application.due_date and application.paused_at:
            paused_days = working_days_between(
                timezone.localdate(application.paused_at), timezone.localdate()
            )
            application.due_date = working_days_add(application.due_date, paused_days)
        application.paused_at = None
        _move(
            application,
            S.ACCEPTED,
            actor=ActorKind.CITIZEN,
            actor_label=_citizen_label(citizen),
            note=NOTE_SUPPLEMENTED,
            also=["form", "due_date", "paused_at"],
        )
        _publish(application, events.APPLICATION_SUPPLEMENTED, supplement=form)
    return application


def application_rate(
    *, citizen: User, application: Application, score: int, comment: str = ""
) -> Application:
    """Rate the service (好差评): once, after the application ended in
    ``completed`` or ``rejected``."""
    with transaction.atomic():
        _hold_open_account(citizen)
        application = _locked(application)
        if application.status not in (S.COMPLETED, S.REJECTED) or application.rated_at is not None:
            raise ServicesError(RATING_NOT_ALLOWED)
        application.rating_score = score
        application.rating_comment = comment
        application.rated_at = timezone.now()
        application.save(update_fields=["rating_score", "rating_comment", "rated_at", "updated_at"])
    return application


def applications_pseudonymise(citizen: User) -> None:
    """What the citizen's applications keep when the account closes (the
    erase hook of the ``applications`` section of their data).

    Kept, under the account's pseudonymous subject: each application's
    record (number, service, department, status, dates, fee, the
    department's reference, the rating's score) and its timeline, notes of
    the department included: the city's record of what was asked of whom
    and how it was handled. Erased: what the citizen wrote (the form and its
    supplements, a cancel reason, the rating's comment, the masked phone
    naming their own steps), and in the stored events the applicant's name,
    ID number and phone and the form. The department received the full
    application when it was submitted and keeps its own case file.

    Applications still waiting for their fee are withdrawn: no department
    has heard of them, and one paid after the close would reach its
    department with nothing but a pseudonym. Their open orders close as any
    withdrawn application's do (``application.cancelled``), and money that
    still arrives goes back.
    """
    owned = list(
        Application.objects.select_for_update()
        .filter(applicant=citizen)
        .order_by("pk")  # the order every batch of routed applications locks in
        .values_list("pk", flat=True)
    )
    if not owned:
        return
    unpaid = list(
        Application.objects.select_related("service", "department")
        .filter(pk__in=owned, status=S.AWAITING_PAYMENT)
        .order_by("pk")
    )
    if unpaid:
        _move_many(unpaid, S.CANCELLED, actor=ActorKind.CITIZEN)
        for application in unpaid:
            outbox.event_publish(
                type=events.APPLICATION_CANCELLED,
                department=None,  # it never reached its department
                application=application,
                data={"application": department_view(application), "reason": ""},
            )
    Application.objects.filter(pk__in=owned).update(
        form={}, rating_comment="", updated_at=timezone.now()
    )
    TimelineEntry.objects.filter(application_id__in=owned, actor=ActorKind.CITIZEN).update(
        actor_label="", note=""
    )
    outbox.events_pseudonymise(application_ids=owned, subject=citizen.subject)


# --- Department -------------------------------------------------------------------------------


def application_department_update(
    *,
    application: Application,
    status: str,
    note: str = "",
    reference: str = "",
    api_key: ApiKey,
    ip: str | None = None,
) -> Application:
    """A department reports progress: accept (the deadline starts), ask for
    more information, complete or reject."""
    with transaction.atomic():
        application = _locked(application)
        if status not in DEPARTMENT_TARGETS:
            raise ServicesError(INVALID_TRANSITION, extra={"current_status": application.status})
        previous = application.status
        now = timezone.now()
        if reference:
            application.department_reference = reference[:100]
        if status == S.ACCEPTED and application.accepted_at is None:
            application.accepted_at = now
            application.due_date = working_days_add(
                timezone.localdate(now), application.service.time_limit_days
            )
        if status == S.NEEDS_INFO:
            application.paused_at = now
        _move(
            application,
            status,
            actor=ActorKind.DEPARTMENT,
            actor_label=api_key.department.name,
            note=note,
            also=["department_reference", "accepted_at", "due_date", "paused_at"],
        )
        audit_record(
            actor=api_key,
            action="application.status_changed",
            target=application,
            data={
                "number": application.number,
                "from": previous,
                "to": status,
                "reference": reference,
            },
            ip=ip,
        )
    return application


# --- System -----------------------------------------------------------------------------------


def application_mark_routed(*, application_id: Any, reference: str = "") -> bool:
    """The department's system took ``application.submitted`` (2xx). Only a
    still-``submitted`` application moves; one the department already
    accepted through the API stays where it is."""
    return applications_mark_routed([(application_id, reference)]) == 1


_ROUTING_FIELDS = (
    "id",
    "number",
    "status",
    "closed_at",
    "updated_at",
    "department_reference",
    "applicant_id",
    "service__name",
)


def applications_mark_routed(routed: Iterable[tuple[Any, str]]) -> int:
    """:func:`application_mark_routed` for several (application id,
    reference) pairs at once, locking them in one statement, in id order;
    how many moved. A pair naming an application twice keeps the first
    reference given."""
    references: dict[Any, str] = {}
    to_pk = Application._meta.pk.to_python
    for application_id, reference in routed:
        key = to_pk(application_id)
        if not references.get(key):
            references[key] = reference
    # No savepoint: inside the delivery engine's record, a failure here
    # undoes that whole record anyway.
    with transaction.atomic(savepoint=False):
        applications = list(
            Application.objects.select_for_update(of=("self",))
            .select_related("service")
            # What routing reads and writes: not the (encrypted) form.
            .only(*_ROUTING_FIELDS)
            .filter(pk__in=list(references))
            .order_by("pk")
        )
        moving, keeping = [], []
        for application in applications:
            reference = references[application.pk]
            keep_reference = bool(reference and not application.department_reference)
            if keep_reference:
                application.department_reference = reference
            if transition_allowed(application.status, S.ROUTED, ActorKind.SYSTEM):
                moving.append(application)
            elif keep_reference:
                keeping.append(application)
        for application in keeping:
            application.save(update_fields=["department_reference", "updated_at"])
        if moving:
            _move_many(
                moving,
                S.ROUTED,
                actor=ActorKind.SYSTEM,
                note=NOTE_ROUTED,
                also=["department_reference"],
            )
    return len(moving)


def applications_delivered(delivered: list[tuple[OutboxEvent, str]]) -> None:
    """The delivery engine's hook for delivered ``application.submitted``
    events (registered in ``ServicesConfig.ready``): the applications are
    routed, and the departments' references kept."""
    applications_mark_routed(
        (event.application_id, reference) for event, reference in delivered if event.application_id
    )


def application_mark_paid(*, application: Application) -> Application:
    """Payment arrived: the application goes to the department."""
    with transaction.atomic():
        application = _locked(application)
        application.submitted_at = timezone.now()
        _move(
            application,
            S.SUBMITTED,
            actor=ActorKind.SYSTEM,
            note=NOTE_PAID,
            also=["submitted_at"],
        )
        _publish(application, events.APPLICATION_SUBMITTED)
    return application
