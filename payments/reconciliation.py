"""Reconciliation (对账): each channel's daily statement against our ledger.

For one day (China time) and one channel, every statement line and every
ledger entry of that channel settled that day are paired by ``(kind,
reference)`` — a charge by the channel's transaction id, a refund by our
refund number. What does not pair, or pairs with another amount, or that the
channel lists in a state other than settled, is a mismatch, stored on the
day's :class:`~payments.models.ReconciliationReport` for an operator to look
into and mark resolved in the admin.

Running a day again replaces its report's open mismatches; one an operator
already resolved is kept, resolution and all, as long as the same difference
is still there (the channel or our ledger may since have been put right).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import User
from payments.models import (
    Channel,
    LedgerEntry,
    MismatchKind,
    ReconciliationMismatch,
    ReconciliationReport,
)
from payments.providers import ChannelUnavailable, provider_for
from payments.providers.base import ProviderError, StatementLine, storable
from payments.selectors import CHINA, day_bounds

logger = logging.getLogger(__name__)

# The words a statement uses for a movement that went through.
SETTLED_STATES = frozenset({"paid", "succeeded"})

MK = MismatchKind
# Resolved mismatches that no longer apply, deleted this many at a time.
GONE_PER_DELETE = 10_000


class ReconcileProgress:
    """What :func:`reconcile` tells whoever watches it run (the command's
    progress bar). Every hook does nothing here; override the ones you need."""

    def channel_started(self, channel: str, *, items: int) -> None:
        """The statement is in: ``items`` statement lines and ledger entries to pair."""

    def advance(self, count: int = 1) -> None:
        """``count`` more of the channel's items were paired."""

    def channel_done(self, report: ReconciliationReport) -> None:
        """The channel's report is stored."""

    def channel_failed(self, channel: str, error: Exception) -> None:
        """The channel's statement could not be had; its report is left as it was."""


@dataclass(frozen=True)
class _Found:
    """One difference, before it is stored."""

    kind: str
    entry_kind: str
    order_no: str
    reference: str
    ours: dict[str, Any] | None
    theirs: dict[str, Any] | None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.entry_kind, self.reference)


def _fit(line: StatementLine) -> StatementLine:
    """A statement line as the channel wrote it, fit for a query and a
    column: a statement may hold what PostgreSQL refuses (NUL), which no
    ledger entry holds (a difference, then)."""
    return replace(
        line,
        order_no=storable(line.order_no, 1000),
        reference=storable(line.reference, 1000),
        state=storable(line.state, 1000),
    )


def _line_record(line: StatementLine) -> dict[str, Any]:
    return {
        "order_no": line.order_no,
        "amount_fen": line.amount_fen,
        "state": line.state,
        "at": line.at.astimezone(CHINA).isoformat(),
    }


def _entry_record(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "order_no": entry.order.order_no,
        "amount_fen": entry.amount_fen,
        "at": entry.at.astimezone(CHINA).isoformat(),
    }


def ledger_of_day(*, channel: str, date: dt.date) -> list[LedgerEntry]:
    """Our ledger entries of ``channel`` whose movement happened on ``date`` (China time)."""
    start, end = day_bounds(date)
    return list(
        LedgerEntry.objects.filter(channel=channel, at__gte=start, at__lt=end)
        .select_related("order")
        .order_by("at", "id")
    )


def compare(
    *,
    channel: str,
    lines: Sequence[StatementLine],
    entries: Sequence[LedgerEntry],
    progress: ReconcileProgress,
) -> tuple[int, list[_Found]]:
    """Pair the statement with the ledger; the number of clean pairs and
    the differences."""
    ours: dict[tuple[str, str], LedgerEntry] = {}
    found: list[_Found] = []
    for mine in entries:
        # The ledger is unique on (channel, kind, reference): no duplicates here.
        ours[(mine.kind, mine.reference)] = mine
    seen: set[tuple[str, str]] = set()
    times: Counter[tuple[str, str]] = Counter((line.kind, line.reference) for line in lines)
    matched = 0
    for line in lines:
        key: tuple[str, str] = (line.kind, line.reference)
        if key in seen:
            # Listed again: one difference for all its copies, below.
            progress.advance()
            continue
        entry = ours.get(key)
        seen.add(key)
        if times[key] > 1:
            found.append(
                _Found(
                    MK.LISTED_MORE_THAN_ONCE,
                    line.kind,
                    entry.order.order_no if entry is not None else line.order_no,
                    line.reference,
                    _entry_record(entry) if entry is not None else None,
                    {**_line_record(line), "times": times[key]},
                )
            )
        theirs = _line_record(line)
        settled = line.state in SETTLED_STATES
        if entry is None:
            if settled:
                # Ours may exist on another day (a movement just around
                # midnight): show it, so the operator sees why.
                elsewhere = (
                    LedgerEntry.objects.filter(
                        channel=channel, kind=line.kind, reference=line.reference
                    )
                    .select_related("order")
                    .first()
                )
                found.append(
                    _Found(
                        MK.MISSING_IN_LEDGER,
                        line.kind,
                        line.order_no,
                        line.reference,
                        _entry_record(elsewhere) if elsewhere is not None else None,
                        theirs,
                    )
                )
            else:
                # The channel lists a movement that did not go through, and
                # we have none: still worth a look, but no money is missing.
                found.append(
                    _Found(
                        MK.STATUS_DIFFERS, line.kind, line.order_no, line.reference, None, theirs
                    )
                )
            progress.advance()
            continue
        clean = True
        if not settled:
            clean = False
            found.append(
                _Found(
                    MK.STATUS_DIFFERS,
                    line.kind,
                    entry.order.order_no,
                    line.reference,
                    _entry_record(entry),
                    theirs,
                )
            )
        if entry.amount_fen != line.amount_fen:
            clean = False
            found.append(
                _Found(
                    MK.AMOUNT_DIFFERS,
                    line.kind,
                    entry.order.order_no,
                    line.reference,
                    _entry_record(entry),
                    theirs,
                )
            )
        matched += clean
        progress.advance()
    for pair, mine in ours.items():
        if pair not in seen:
            found.append(
                _Found(
                    MK.MISSING_IN_STATEMENT,
                    mine.kind,
                    mine.order.order_no,
                    mine.reference,
                    _entry_record(mine),
                    None,
                )
            )
        progress.advance()
    return matched, found


@transaction.atomic
def _store(
    *,
    date: dt.date,
    channel: str,
    lines: int,
    entries: int,
    matched: int,
    found: Iterable[_Found],
) -> ReconciliationReport:
    report, _ = ReconciliationReport.objects.select_for_update().get_or_create(
        date=date, channel=channel
    )
    now_found = {item.key: item for item in found}
    resolved = {
        (m.kind, m.entry_kind, m.reference): m
        for m in report.items.filter(resolved_at__isnull=False)
    }
    # Open differences are found afresh each run; resolved ones stay while
    # the same difference does (gone: the fix took, nothing left to show;
    # changed: what was resolved is not what is there now, so it is open
    # again; its resolution stays in the audit trail).
    report.items.filter(resolved_at__isnull=True).delete()
    gone = {
        m.pk
        for key, m in resolved.items()
        if key not in now_found
        or (m.ours, m.theirs) != (now_found[key].ours, now_found[key].theirs)
    }
    # A statement carries at most 65,535 values (config/postgresql/base.py).
    listed = sorted(gone)
    for start in range(0, len(listed), GONE_PER_DELETE):
        report.items.filter(pk__in=listed[start : start + GONE_PER_DELETE]).delete()
    resolved = {key: m for key, m in resolved.items() if m.pk not in gone}
    ReconciliationMismatch.objects.bulk_create(
        ReconciliationMismatch(
            report=report,
            kind=item.kind,
            entry_kind=item.entry_kind,
            order_no=item.order_no[:64],
            reference=item.reference[:64],
            ours=item.ours,
            theirs=item.theirs,
        )
        for key, item in now_found.items()
        if key not in resolved
    )
    report.ran_at = timezone.now()
    report.statement_lines = lines
    report.ledger_entries = entries
    report.matched = matched
    report.mismatches = len(now_found)
    report.save()
    audit_record(
        actor=None,
        action="payment.reconciled",
        target=report,
        data={
            "date": date.isoformat(),
            "channel": channel,
            "statement_lines": lines,
            "ledger_entries": entries,
            "matched": matched,
            "mismatches": report.mismatches,
        },
    )
    return report


def reconcile(
    *,
    date: dt.date,
    channels: Sequence[str] | None = None,
    progress: ReconcileProgress | None = None,
) -> list[ReconciliationReport]:
    """Reconcile ``date`` (China time) for ``channels`` (every channel by
    default) and return the reports written, one per channel reconciled.

    A channel whose statement cannot be downloaded (:class:`ProviderError`,
    or not configured here) is skipped, logged and passed to
    ``progress.channel_failed``; the others go on, and that channel's
    earlier report, if any, stays as it was."""
    watcher = progress or ReconcileProgress()
    reports = []
    for channel in channels or Channel.values:
        try:
            lines = [_fit(line) for line in provider_for(channel).statement_download(date=date)]
        except (ProviderError, ChannelUnavailable) as exc:
            logger.warning("statement of %s for %s not reconciled: %s", channel, date, exc)
            watcher.channel_failed(channel, exc)
            continue
        except Exception as exc:  # a parser's gap: this channel fails, the others go on
            logger.exception("statement of %s for %s could not be read", channel, date)
            watcher.channel_failed(channel, ProviderError(f"unreadable statement: {exc!r}"))
            continue
        entries = ledger_of_day(channel=channel, date=date)
        watcher.channel_started(channel, items=len(lines) + len(entries))
        matched, found = compare(channel=channel, lines=lines, entries=entries, progress=watcher)
        report = _store(
            date=date,
            channel=channel,
            lines=len(lines),
            entries=len(entries),
            matched=matched,
            found=found,
        )
        watcher.channel_done(report)
        reports.append(report)
    return reports


@transaction.atomic
def mismatch_resolve(
    *, mismatch: ReconciliationMismatch, actor: User, note: str, ip: str | None = None
) -> ReconciliationMismatch:
    """Mark a difference looked into and settled, with what was done about
    it. One already resolved is returned as it is (its first resolution
    stands)."""
    mismatch = ReconciliationMismatch.objects.select_for_update().get(pk=mismatch.pk)
    if mismatch.resolved_at is not None:
        return mismatch
    mismatch.resolved_at = timezone.now()
    mismatch.resolved_by = str(actor)[:150]
    mismatch.resolution_note = note.strip()
    mismatch.save(update_fields=["resolved_at", "resolved_by", "resolution_note"])
    audit_record(
        actor=actor,
        action="payment.reconciliation_mismatch_resolved",
        target=mismatch,
        data={
            "report": str(mismatch.report_id),
            "kind": mismatch.kind,
            "entry_kind": mismatch.entry_kind,
            "order_no": mismatch.order_no,
            "reference": mismatch.reference,
            "note": mismatch.resolution_note[:500],
        },
        ip=ip,
    )
    return mismatch
