"""Writes to the service catalog: services, categories, import and export."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from pypinyin import Style, lazy_pinyin

from accounts.audit import audit_record, audit_values
from accounts.models import ApiKey, Department, User
from config.errors import NOT_FOUND
from config.pages import catalog_pages
from services.errors import (
    FORM_SCHEMA_INVALID,
    GUIDE_INVALID,
    SERVICE_CODE_TAKEN,
    SERVICE_HELD,
    ServicesError,
)
from services.formschema import schema_problems
from services.models import Category, Channel, Service

# Guide fields a department or an operator may set (besides code and department).
GUIDE_FIELDS = (
    "name",
    "category",
    "summary",
    "eligibility",
    "materials",
    "fee_fen",
    "time_limit_days",
    "legal_basis",
    "channels",
    "identity_level",
    "form_schema",
    "keywords",
    "is_active",
)
# The guide's fields whose old and new values an update's audit entry keeps
# (the long texts and the form by name only).
AUDITED_VALUES = (
    "name",
    "category",
    "fee_fen",
    "time_limit_days",
    "channels",
    "identity_level",
    "is_active",
)


# Guide fields held as JSON: compared as JSON, where Python's == takes true
# for 1 (a form schema's "const": true is not "const": 1).
_JSON_FIELDS = frozenset({"materials", "channels", "form_schema", "keywords"})


def json_equal(one: Any, two: Any) -> bool:
    """Whether two JSON values are the same: numbers by value (1 and 1.0,
    or 1e16 as PostgreSQL gives it back), true and 1 apart."""
    pending = [(one, two)]
    while pending:
        a, b = pending.pop()
        if isinstance(a, dict) and isinstance(b, dict):
            if a.keys() != b.keys():
                return False
            pending.extend((a[name], b[name]) for name in a)
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif isinstance(a, bool | dict | list) or isinstance(b, bool | dict | list):
            if type(a) is not type(b) or a != b:
                return False
        elif a != b:
            return False
    return True


def _unchanged(name: str, stored: Any, given: Any) -> bool:
    if name in _JSON_FIELDS:
        return json_equal(stored, given)
    return bool(stored == given)


def search_text_build(name: str, keywords: Iterable[str]) -> str:
    """Name and keywords, each also as full pinyin and as initials.

    ``住房公积金`` gives ``住房公积金 zhufanggongjijin zfgjj``, so ``公积金``,
    ``gongjijin`` and ``gjj`` all find it.
    """
    parts: list[str] = []
    for text in [name, *keywords]:
        text = text.strip().lower()
        if not text:
            continue
        parts.append(text)
        parts.append("".join(lazy_pinyin(text)).replace(" ", ""))
        parts.append("".join(lazy_pinyin(text, style=Style.FIRST_LETTER)).replace(" ", ""))
    return " ".join(dict.fromkeys(parts))


def guide_check(values: Mapping[str, Any]) -> None:
    """Rules a guide must follow beyond field shapes (the serializer's job)."""
    errors: dict[str, list[str]] = {}
    if "form_schema" in values:
        problems = schema_problems(values["form_schema"])
        if problems:
            raise ServicesError(FORM_SCHEMA_INVALID, problems[0], errors={"form_schema": problems})
    channels = values.get("channels")
    if channels is not None:
        if not channels:
            errors["channels"] = [_("至少选择一个办理渠道")]
        elif any(c not in Channel.values for c in channels):
            errors["channels"] = [_("办理渠道只能是 online、hall、mail")]
    materials = values.get("materials")
    if materials is not None:
        names = [m.get("name", "") for m in materials]
        if len(set(names)) != len(names):
            errors["materials"] = [_("材料名称不能重复")]
    if errors:
        raise ServicesError(GUIDE_INVALID, next(iter(errors.values()))[0], errors=errors)


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    if "channels" in values:
        values["channels"] = list(dict.fromkeys(values["channels"]))
    if "keywords" in values:
        values["keywords"] = [k.strip() for k in dict.fromkeys(values["keywords"]) if k.strip()]
    if "materials" in values:
        values["materials"] = [
            {
                "name": m["name"],
                "required": bool(m.get("required", True)),
                "note": m.get("note", ""),
            }
            for m in values["materials"]
        ]
    return values


def service_create(
    *,
    code: str,
    department: Department,
    actor: User | ApiKey | None,
    ip: str | None = None,
    **values: Any,
) -> Service:
    """Publish a new service for ``department`` (live unless ``is_active`` is false)."""
    values = _normalise(dict(values))
    guide_check(values)
    service = Service(code=code, department=department, **values)
    service.search_text = search_text_build(service.name, service.keywords)
    if not isinstance(actor, ApiKey) and not service.is_active:
        service.offline_held_at = timezone.now()  # created offline by the operators
    try:
        with transaction.atomic():
            service.save()
            audit_record(
                actor=actor,
                action="service.created",
                target=service,
                data={"code": code, "department": department.code},
                ip=ip,
            )
            catalog_pages.bump()
    except IntegrityError as exc:
        raise ServicesError(
            SERVICE_CODE_TAKEN, errors={"code": [str(SERVICE_CODE_TAKEN.title)]}
        ) from exc
    return service


def service_update(
    *,
    service: Service,
    actor: User | ApiKey | None,
    ip: str | None = None,
    hold: bool = False,
    **values: Any,
) -> Service:
    """Change a service's guide. Its code and department never change.

    ``hold`` (operators taking it offline): the service is held offline
    even if it already was, its department having taken it offline."""
    values = _normalise({k: v for k, v in values.items() if k in GUIDE_FIELDS})
    # A form schema sent again as stored is not checked again: one saved
    # before a rule (a format nothing checks) leaves the guide editable. As
    # JSON has it (true is not 1), and against the row as locked below too.
    schema_as_read = "form_schema" in values and json_equal(
        service.form_schema, values["form_schema"]
    )
    guide_check({k: v for k, v in values.items() if k != "form_schema" or not schema_as_read})
    with transaction.atomic():
        # Compared with and written to the row as it is now, field by field:
        # an edit made since ``service`` was read (an operator taking it
        # offline, another edit) is not written back over.
        current = (
            # No key changes: applications and orders naming the service go on.
            Service.objects.select_for_update(of=("self",), no_key=True)
            .select_related("department", "category")
            .filter(pk=service.pk)
            .first()
        )
        if current is None:  # deleted by an operator since it was read
            raise ServicesError(NOT_FOUND)
        if schema_as_read and not json_equal(current.form_schema, values["form_schema"]):
            # Another edit replaced the schema since it was read.
            guide_check({"form_schema": values["form_schema"]})
        service = current
        changed = [
            name
            for name, value in values.items()
            if not _unchanged(name, getattr(service, name), value)
        ]
        held = (
            _offline_hold(service, actor, values)
            if "is_active" in changed or (hold and values.get("is_active") is False)
            else []
        )
        if not changed and not held:
            return service
        shown = audit_values(
            {name: getattr(service, name) for name in changed},
            {name: values[name] for name in changed},
            AUDITED_VALUES,
        )
        for name in changed:
            setattr(service, name, values[name])
        service.search_text = search_text_build(service.name, service.keywords)
        service.save(update_fields=[*changed, *held, "search_text", "updated_at"])
        audit_record(
            actor=actor,
            action="service.updated",
            target=service,
            data={"code": service.code, "fields": sorted({*changed, *held}), "values": shown},
            ip=ip,
        )
        catalog_pages.bump()
    return service


def _offline_hold(service: Service, actor: User | ApiKey | None, values: dict) -> list[str]:
    """The platform's operators taking a service offline hold it there: its
    department cannot put it back online (``service_held``) until they do.
    A department taking its own service offline holds nothing. The fields
    to save with the change."""
    if isinstance(actor, ApiKey):
        if values["is_active"] and not service.is_active and service.offline_held_at is not None:
            raise ServicesError(SERVICE_HELD)
        return []
    if values["is_active"] == (service.offline_held_at is None):
        return []  # as asked already: online and free, or offline and held
    service.offline_held_at = None if values["is_active"] else timezone.now()
    return ["offline_held_at"]


def category_ensure(*, code: str, name: str, **fields: Any) -> Category:
    with transaction.atomic():
        category, _created = Category.objects.update_or_create(
            code=code, defaults={"name": name, **fields}
        )
        catalog_pages.bump()
    return category


# --- Import and export (operators, admin) -------------------------------------------------


def service_as_record(service: Service) -> dict[str, Any]:
    """One service as the department API and the catalog file show it."""
    return {
        "code": service.code,
        "department": service.department.code,
        "category": service.category.code,
        **{name: getattr(service, name) for name in GUIDE_FIELDS if name not in ("category",)},
    }


def catalog_export(services: Iterable[Service]) -> list[dict[str, Any]]:
    return [service_as_record(s) for s in services]


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def catalog_import(
    records: list[dict[str, Any]],
    *,
    actor: User | None,
    ip: str | None = None,
    missing_only: bool = False,
) -> ImportReport:
    """Create or update every service in ``records`` (the export format), all
    or nothing: the first bad record aborts the import with its code named.

    With ``missing_only`` (the demo's seeding) only services not stored yet
    are created; one already there is left exactly as it is (online or
    offline, held or not, its guide as its department keeps it) and reported
    unchanged. Every record is still checked, a code of another department
    still refused."""
    from services.serializers import CatalogRecordSerializer

    report = ImportReport()
    with transaction.atomic():
        for index, record in enumerate(records):
            serializer = CatalogRecordSerializer(data=record)
            if not serializer.is_valid():
                errors = {f"{index}.{k}": v for k, v in serializer.errors.items()}
                raise ServicesError(
                    GUIDE_INVALID,
                    _("第 %(n)s 条（%(code)s）有误")
                    % {
                        "n": index + 1,
                        "code": record.get("code", "?") if isinstance(record, dict) else "?",
                    },
                    errors={
                        k: [str(m) for m in v] if isinstance(v, list) else [str(v)]
                        for k, v in errors.items()
                    },
                )
            data = dict(serializer.validated_data)
            code = data.pop("code")
            department = data.pop("department")
            existing = Service.objects.filter(code=code).select_related("department").first()
            if existing is not None and "is_active" not in record:
                # Said nothing of it: online or offline (held or not) stays.
                data.pop("is_active", None)
            if existing is not None and existing.department_id != department.pk:
                raise ServicesError(
                    SERVICE_CODE_TAKEN,
                    _("事项 %(code)s 属于其他部门") % {"code": code},
                    errors={f"{index}.code": [str(SERVICE_CODE_TAKEN.title)]},
                )
            if existing is not None and missing_only:
                report.unchanged.append(code)
                continue
            try:
                if existing is None:
                    service_create(code=code, department=department, actor=actor, ip=ip, **data)
                    report.created.append(code)
                else:
                    before = existing.updated_at
                    updated = service_update(service=existing, actor=actor, ip=ip, **data)
                    changed = updated.updated_at != before
                    (report.updated if changed else report.unchanged).append(code)
            except ServicesError as exc:  # a guide rule (guide_check), named by record
                raise ServicesError(
                    exc.error,
                    _("第 %(n)s 条（%(code)s）有误") % {"n": index + 1, "code": code},
                    errors={f"{index}.{k}": v for k, v in exc.errors.items()},
                ) from exc
    return report
