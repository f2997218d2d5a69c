"""Where each app declares the data it holds about a citizen.

Every app that keeps rows about a citizen registers a *section* here, in its
``AppConfig.ready``: a name, what the citizen gets in ``GET /api/v1/me/export/``
(``export(user)``, JSON-ready), what happens to it when the account is
closed (``erase(user)``, run inside the account-closing transaction) and the
models it answers for. The accounts app assembles the export and runs the
erase hooks from here without importing the apps above it (dependencies
point down, see CONVENTIONS).

Registering is one line; the payments app, for instance, will do::

    def ready(self) -> None:
        from accounts import citizen_data
        from payments import orders, selectors
        from payments.models import PaymentOrder, Refund

        citizen_data.register(
            "payments",
            export=selectors.payments_export,
            erase=orders.payments_pseudonymise,
            models=[PaymentOrder, Refund],
        )

``export`` and ``erase`` are both required keyword arguments, and either may
be ``None`` on purpose: nothing to show (a replay cache whose answers are
already in another section), or nothing to erase (rows that hold no personal
data beyond the pseudonymous account they point at). ``models`` lists every
model the section answers for: the test suite fails when a model that holds
a citizen's data (see :func:`models_holding_citizen_data`) belongs to no
section and is not on its list of reasoned exemptions.

An erase hook pseudonymises or deletes; it must leave rows other records
depend on in place (applications, orders), stripped of personal data, and
must not commit or start work after commit on its own: it runs in the
closing transaction, and if it raises, the account is not closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from accounts.models import User

Export = Callable[["User"], Any]
Erase = Callable[["User"], None]


@dataclass(frozen=True)
class Section:
    name: str
    export: Export | None
    erase: Erase | None
    models: tuple[type[models.Model], ...]


_sections: dict[str, Section] = {}


def register(
    name: str,
    *,
    export: Export | None,
    erase: Erase | None,
    models: Iterable[type[models.Model]] = (),
) -> Section:
    """Declare a section of every citizen's data (call it in ``AppConfig.ready``).

    ``name`` is the section's key in the export. Registering the same
    section again is harmless; another section under a taken name is a
    programming error.
    """
    section = Section(name=name, export=export, erase=erase, models=tuple(models))
    existing = _sections.get(name)
    if existing is not None and existing != section:
        raise ValueError(f"citizen data section {name!r} is already registered")
    _sections[name] = section
    return section


def sections() -> list[Section]:
    """Every registered section, in the order the apps registered them."""
    return list(_sections.values())


def export(user: User) -> dict[str, Any]:
    """Every section's share of the citizen's data, keyed by section name."""
    return {s.name: s.export(user) for s in _sections.values() if s.export is not None}


def erase(user: User) -> None:
    """Run every erase hook, in the caller's transaction. Hooks run in the
    reverse order of registration: apps higher up (which registered later)
    go first and still see the account as it was."""
    for section in reversed(list(_sections.values())):
        if section.erase is not None:
            section.erase(user)


def covered_models() -> set[type[models.Model]]:
    return {model for section in _sections.values() for model in section.models}


# --- Which models hold a citizen's data ---------------------------------------------------

SUBJECT_FIELD = "subject"


def _points_at(model: type[models.Model], targets: set[type[models.Model]]) -> bool:
    for field in model._meta.get_fields():
        if (
            field.concrete
            and (field.many_to_one or field.one_to_one)
            and field.related_model in targets
        ):
            return True
    return False


def _has_subject(model: type[models.Model]) -> bool:
    return any(
        field.name == SUBJECT_FIELD and isinstance(field, models.CharField)
        for field in model._meta.get_fields()
    )


def models_holding_citizen_data(
    candidates: Iterable[type[models.Model]],
    *,
    user_model: type[models.Model],
    exempt: Iterable[type[models.Model]] = (),
) -> set[type[models.Model]]:
    """The models among ``candidates`` whose rows belong to a citizen.

    That is: the user model itself; any model with a foreign key or
    one-to-one to it; any model keeping the pseudonymous ``subject`` (as
    star-code scans do); and, step by step, any model with a foreign key or
    one-to-one to a model already found (a timeline entry belongs to an
    application, which belongs to its applicant). An ``exempt`` model is
    found like any other but does not pass citizen data on to the models
    pointing at it (a staff member's API key does not make the scans it
    records a citizen's).
    """
    candidates = list(candidates)
    exempt = set(exempt)
    found = {user_model} | {m for m in candidates if _has_subject(m)}
    while True:
        carriers = found - exempt
        more = {m for m in candidates if m not in found and _points_at(m, carriers)}
        if not more:
            return found
        found |= more


def uncovered_models(
    candidates: Iterable[type[models.Model]],
    *,
    user_model: type[models.Model],
    covered: Iterable[type[models.Model]],
    exempt: Iterable[type[models.Model]],
) -> set[type[models.Model]]:
    """Models holding a citizen's data that no section answers for and no
    exemption names: each one is a hole in the export and in erasure."""
    exempt = set(exempt)
    holding = models_holding_citizen_data(candidates, user_model=user_model, exempt=exempt)
    return holding - set(covered) - exempt
