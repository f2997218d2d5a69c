"""Reads of the catalog, applications and routing."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from django.db.models import (
    Case,
    CharField,
    Count,
    IntegerField,
    Prefetch,
    Q,
    QuerySet,
    Value,
    When,
)
from django.utils import timezone

from accounts.models import Department, User
from config.ids import uuid7_floor
from services.models import (
    Application,
    ApplicationStatus,
    Category,
    Delivery,
    DeliveryStatus,
    Endpoint,
    OutboxEvent,
    Service,
    TimelineEntry,
)
from services.workdays import working_days_add


def departments_public() -> QuerySet[Department]:
    return Department.objects.filter(is_active=True).order_by("code")


def categories_public() -> QuerySet[Category]:
    return Category.objects.filter(is_active=True)


def services_public() -> QuerySet[Service]:
    """Services a citizen can see and apply for."""
    return Service.objects.filter(
        is_active=True, department__is_active=True, category__is_active=True
    ).select_related("department", "category")


def services_matching(services: QuerySet[Service], q: str) -> QuerySet[Service]:
    """Services whose name, keywords or their pinyin contain every word of
    ``q``; name matches first."""
    terms = q.strip().lower().split()
    if not terms:
        return services
    for term in terms:
        services = services.filter(search_text__contains=term)
    return services.annotate(
        name_rank=Case(
            When(name__contains=terms[0], then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
    ).order_by("name_rank", "code")


def department_services(department: Department) -> QuerySet[Service]:
    return Service.objects.filter(department=department).select_related("department", "category")


# --- Applications ---------------------------------------------------------------------------


def _iso(value: dt.datetime | dt.date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return timezone.localtime(value).isoformat()
    return value.isoformat()


def applicant_view(applicant: User) -> dict[str, str]:
    """Who applied, as the department sees it: the verified identity,
    unmasked (the department needs it to handle the case); once the
    account is closed, the pseudonymous subject alone."""
    if applicant.closed_at is not None:
        return {"sub": applicant.subject}
    return {
        "sub": applicant.subject,
        "name": applicant.real_name,
        "id_number": applicant.id_number,
        "phone": applicant.phone or "",
    }


def department_view(application: Application) -> dict[str, Any]:
    """An application as its department sees it, in the department API and
    in events alike."""
    return {
        "number": application.number,
        "service": application.service.code,
        "status": application.status,
        "form": application.form,
        "fee_fen": application.fee_fen,
        "created_at": _iso(application.created_at),
        "due_date": _iso(application.due_date),
        "reference": application.department_reference,
        "applicant": applicant_view(application.applicant),
    }


def timeline_known(application: Application, entries: list[TimelineEntry]) -> None:
    """``entries`` are the whole timeline of ``application`` (just created):
    kept where ``prefetch_related("timeline")`` keeps it, so that whoever
    shows the application reads them without a query."""
    timeline = application.timeline.all()
    timeline._result_cache = entries
    setattr(timeline, "_prefetch_done", True)  # noqa: B010  # Django's prefetch flag, untyped
    setattr(application, "_prefetched_objects_cache", {"timeline": timeline})  # noqa: B010


def applications_of(citizen: User) -> QuerySet[Application]:
    return Application.objects.filter(applicant=citizen).select_related("service")


def application_of(citizen: User, application_id: Any) -> Application | None:
    """The citizen's own application, or None (another's is not found)."""
    return (
        applications_of(citizen)
        .prefetch_related(Prefetch("timeline", queryset=TimelineEntry.objects.order_by("at", "id")))
        .filter(pk=application_id)
        .first()
    )


def applications_for_department(
    department: Department, *, status: str | None = None
) -> QuerySet[Application]:
    # Only what reached the department: not unpaid ones, nor ones withdrawn
    # before payment (their applicants' identities are none of its business).
    applications = Application.objects.filter(
        department=department, submitted_at__isnull=False
    ).select_related("service", "applicant")
    if status:
        applications = applications.filter(status=status)
    return applications


def application_for_department(department: Department, number: str) -> Application | None:
    return (
        applications_for_department(department)
        .prefetch_related(Prefetch("timeline", queryset=TimelineEntry.objects.order_by("at", "id")))
        .filter(number=number)
        .first()
    )


def applications_export(citizen: User) -> list[dict[str, Any]]:
    """The citizen's applications for their data export: every answer,
    step and rating, and which department was sent what, and when. A fixed
    number of queries, however many applications there are."""
    events = (
        OutboxEvent.objects.select_related("department")
        .defer("data")  # the payload repeats the application; not decrypted for nothing
        .order_by("created_at", "id")
        .prefetch_related(
            Prefetch("deliveries", queryset=Delivery.objects.order_by("created_at", "id"))
        )
    )
    applications = (
        Application.objects.filter(applicant=citizen)
        .select_related("service", "department")
        .prefetch_related(
            Prefetch("timeline", queryset=TimelineEntry.objects.order_by("at", "id")),
            Prefetch("events", queryset=events),
        )
        .order_by("created_at", "id")
    )
    return [
        {
            "id": str(application.id),
            "number": application.number,
            "service": {"code": application.service.code, "name": application.service.name},
            "department": {
                "code": application.department.code,
                "name": application.department.name,
            },
            "status": application.status,
            "form": application.form,
            "fee_fen": application.fee_fen,
            "department_reference": application.department_reference,
            "created_at": _iso(application.created_at),
            "submitted_at": _iso(application.submitted_at),
            "accepted_at": _iso(application.accepted_at),
            "due_date": _iso(application.due_date),
            "closed_at": _iso(application.closed_at),
            "rating": {
                "score": application.rating_score,
                "comment": application.rating_comment,
                "rated_at": _iso(application.rated_at),
            }
            if application.rated_at is not None
            else None,
            "timeline": [
                {
                    "status": entry.status,
                    "at": _iso(entry.at),
                    "actor": entry.actor,
                    "actor_label": entry.actor_label,
                    "note": entry.note,
                }
                for entry in application.timeline.all()
            ],
            "events_sent": [
                {
                    "id": event.webhook_id,
                    "type": event.type,
                    "at": _iso(event.created_at),
                    "department": event.department.code if event.department else None,
                    "deliveries": [
                        {
                            "status": delivery.status,
                            "attempts": delivery.attempt_count,
                            "delivered_at": _iso(delivery.succeeded_at),
                        }
                        for delivery in event.deliveries.all()
                    ],
                }
                for event in application.events.all()
            ],
        }
        for application in applications
    ]


# --- Routing ----------------------------------------------------------------------------------

# What the record of a delivery and of each of its tries shows, to the
# department (API) and to operators (admin) alike.
DELIVERY_FIELDS = (
    "event",
    "endpoint",
    "status",
    "attempt_count",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "last_attempt_at",
    "succeeded_at",
    "failed_at",
    "created_at",
)
DELIVERY_ATTEMPT_FIELDS = (
    "number",
    "started_at",
    "duration_ms",
    "status_code",
    "error",
    "response_body",
    "succeeded",
)


def endpoints_of(department: Department) -> QuerySet[Endpoint]:
    """The department's endpoints, oldest first; those made at one time by
    id, so that each is on one page of the list only."""
    return Endpoint.objects.filter(department=department, deleted_at=None).order_by(
        "created_at", "id"
    )


def deliveries_of_application(application: Application) -> QuerySet[Delivery]:
    """What was sent to departments about ``application``, oldest first."""
    return (
        Delivery.objects.filter(event__application=application)
        .select_related("event", "endpoint")
        .order_by("created_at", "id")
    )


def deliveries_of(
    department: Department, *, endpoint: UUID | None = None, status: str | None = None
) -> QuerySet[Delivery]:
    """The department's deliveries, or those of its ``endpoint``, with
    ``status`` if given. Each combination is read along an index in the
    list's order (newest first, then by id): the department's by the
    department each delivery holds (``delivery_dept_feed``,
    ``delivery_dept_status``); one endpoint's by the endpoint, the
    department checked on the endpoint's row (``delivery_endpoint_recent``,
    ``delivery_endpoint_status``). Given the delivery's department as well,
    PostgreSQL may walk the department's index and pass over the other
    endpoints' rows (all the rows since an endpoint's last delivery, for
    one that no longer gets any). The endpoint is not fetched: the
    department sees its id."""
    if endpoint is None:
        deliveries = Delivery.objects.filter(department=department)
    else:
        deliveries = Delivery.objects.filter(endpoint=endpoint, endpoint__department=department)
    if status is not None:
        deliveries = deliveries.filter(status=status)
    return deliveries.select_related("event")


DUE_SOON_WORKING_DAYS = 3


def applications_in_deadline_state(
    applications: QuerySet[Application], state: str
) -> QuerySet[Application]:
    """Those of ``applications`` in deadline ``state`` (see
    :func:`applications_with_deadline_state`), filtered on the columns, so
    that the ``(status, due_date)`` index answers however many there are."""
    accepted = applications.filter(status=ApplicationStatus.ACCEPTED, due_date__isnull=False)
    today = timezone.localdate()
    if state == "overdue":
        return accepted.filter(due_date__lt=today)
    soon = working_days_add(today, DUE_SOON_WORKING_DAYS)
    if state == "due_soon":
        return accepted.filter(due_date__gte=today, due_date__lte=soon)
    return accepted.filter(due_date__gt=soon)


def applications_with_deadline_state(applications: QuerySet[Application]) -> QuerySet[Application]:
    """Annotate ``deadline``: ``overdue``, ``due_soon`` (within
    ``DUE_SOON_WORKING_DAYS`` working days) or ``on_track`` for accepted
    applications, None otherwise (补正 pauses the clock). One holiday lookup
    for the whole list."""
    today = timezone.localdate()
    soon = working_days_add(today, DUE_SOON_WORKING_DAYS)
    accepted = Q(status=ApplicationStatus.ACCEPTED, due_date__isnull=False)
    return applications.annotate(
        deadline=Case(
            When(accepted & Q(due_date__lt=today), then=Value("overdue")),
            When(accepted & Q(due_date__lte=soon), then=Value("due_soon")),
            When(accepted, then=Value("on_track")),
            default=None,
            output_field=CharField(),
        )
    )


# --- The operators' dashboard -----------------------------------------------------------------
# Each figure is one grouped query over an index: applications and
# deliveries since a time by their time-ordered ids (uuid7), deadlines by
# (status, due_date), dead letters by (status, next_attempt_at).


def applications_counted(
    *, since: dt.datetime, today_start: dt.datetime, by: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Applications made since ``since`` grouped by ``by`` (e.g. ``("status",)``),
    each group with ``week`` (all since ``since``) and ``today`` (since
    ``today_start``)."""
    return list(
        Application.objects.filter(id__gte=uuid7_floor(since), created_at__gte=since)
        .values(*by)
        .annotate(
            week=Count("id"),
            today=Count("id", filter=Q(created_at__gte=today_start)),
        )
        .order_by(*by)
    )


def deadlines_by_department() -> list[dict[str, Any]]:
    """Accepted applications past their due date (``overdue``) or due within
    ``DUE_SOON_WORKING_DAYS`` working days (``due_soon``), per department,
    as the admin's deadline filter counts them."""
    today = timezone.localdate()
    soon = working_days_add(today, DUE_SOON_WORKING_DAYS)
    return list(
        Application.objects.filter(
            status=ApplicationStatus.ACCEPTED, due_date__isnull=False, due_date__lte=soon
        )
        .values("department_id", "department__code", "department__name")
        .annotate(
            overdue=Count("id", filter=Q(due_date__lt=today)),
            due_soon=Count("id", filter=Q(due_date__gte=today)),
        )
        .order_by("-overdue", "-due_soon", "department__code")
    )


def deliveries_by_endpoint(*, since: dt.datetime) -> dict[Any, dict[str, int]]:
    """Per endpoint id: deliveries made since ``since`` that ``succeeded`` or
    ``failed`` (dead-lettered), and every delivery dead-lettered now
    (``dead_letters``, whenever it was made: they wait for a replay)."""
    dead = DeliveryStatus.FAILED
    rows = (
        Delivery.objects.filter(
            Q(id__gte=uuid7_floor(since), created_at__gte=since) | Q(status=dead)
        )
        .values("endpoint_id")
        .annotate(
            succeeded=Count("id", filter=Q(created_at__gte=since, status=DeliveryStatus.SUCCEEDED)),
            failed=Count("id", filter=Q(created_at__gte=since, status=dead)),
            dead_letters=Count("id", filter=Q(status=dead)),
        )
        .order_by("endpoint_id")
    )
    return {
        row["endpoint_id"]: {k: v for k, v in row.items() if k != "endpoint_id"} for row in rows
    }


def endpoints_watched() -> QuerySet[Endpoint]:
    """Every endpoint in service (not deleted), with its department."""
    return (
        Endpoint.objects.filter(deleted_at=None)
        .select_related("department")
        .order_by("department__code", "created_at")
    )
