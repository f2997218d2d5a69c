"""``python manage.py reconcile --date YYYY-MM-DD [--channel wechat ...]``."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from payments import selectors
from payments.models import Channel, ReconciliationReport
from payments.reconciliation import ReconcileProgress, reconcile
from payments.selectors import china_today


class BarProgress(ReconcileProgress):
    """One tqdm bar per channel over its statement lines and ledger entries."""

    def __init__(self, stream: TextIO, *, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.bar: tqdm[Any] | None = None
        self.failures: list[tuple[str, Exception]] = []

    def channel_started(self, channel: str, *, items: int) -> None:
        self.bar = tqdm(
            total=items, desc=channel, unit="line", file=self.stream, disable=not self.enabled
        )

    def advance(self, count: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def channel_done(self, report: ReconciliationReport) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def channel_failed(self, channel: str, error: Exception) -> None:
        self.failures.append((channel, error))


class Command(BaseCommand):
    help = (
        "Reconcile one day (China time; default yesterday) of each payment channel's "
        "statement against the ledger. Mismatches (missing in the ledger, missing in the "
        "statement, amount or status differs) are printed and stored for the admin "
        "(对账报告 / 对账差错), where operators mark them resolved. Running a day again "
        "replaces its open mismatches and keeps resolved ones still present. Exits 0 "
        "whatever the mismatches; exits 1 if a channel's statement could not be downloaded "
        "(the other channels are reconciled all the same)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--date", help="the day to reconcile, YYYY-MM-DD (China time); default yesterday"
        )
        parser.add_argument(
            "--channel",
            action="append",
            choices=Channel.values,
            dest="channels",
            help="a channel to reconcile (repeatable); default all",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress bar (on stderr)"
        )

    def _date(self, value: str | None) -> dt.date:
        today = china_today()
        if value is None:
            return today - dt.timedelta(days=1)
        try:
            date = dt.datetime.strptime(value, "%Y-%m-%d").date()
        except ValueError:
            raise CommandError(
                f"--date {value!r} is not a date: use YYYY-MM-DD, e.g. {today:%Y-%m-%d}"
            ) from None
        if date > today:
            raise CommandError(f"--date {value}: no statement exists for a day still to come")
        # The calendar's first day has no bounds in China time (it starts
        # before year 1 in UTC); no channel has a statement of it anyway.
        if date <= dt.date.min:
            raise CommandError(f"--date {value}: no statement exists for the calendar's first day")
        return date

    def handle(self, *args: Any, **options: Any) -> None:
        date = self._date(options["date"])
        channels: list[str] = list(dict.fromkeys(options["channels"] or Channel.values))
        # tqdm writes \r-terminated updates: straight to the stream, past the
        # OutputWrapper that would end every write with a newline.
        stream = getattr(self.stderr, "_out", sys.stderr)
        progress = BarProgress(stream, enabled=not options["no_progress"])
        self.stdout.write(f"reconciling {date:%Y-%m-%d}: {', '.join(channels)}")
        reports = reconcile(date=date, channels=channels, progress=progress)
        self._print_mismatches(reports)
        self._print_summary(reports)
        for channel, error in progress.failures:
            self.stderr.write(f"{channel}: statement not downloaded: {error}")
        if progress.failures:
            failed = ", ".join(channel for channel, _ in progress.failures)
            raise CommandError(
                f"{failed}: not reconciled (statement unavailable); run again for these channels"
            )

    def _print_mismatches(self, reports: list[ReconciliationReport]) -> None:
        rows = []
        for report in reports:
            for item in report.items.order_by("kind", "id"):
                ours = (item.ours or {}).get("amount_fen")
                theirs = (item.theirs or {}).get("amount_fen")
                rows.append(
                    (
                        report.channel,
                        item.kind,
                        item.entry_kind,
                        item.order_no,
                        item.reference,
                        selectors.yuan(ours if isinstance(ours, int) else None),
                        selectors.yuan(theirs if isinstance(theirs, int) else None),
                        str((item.theirs or {}).get("state", "-")),
                        "resolved" if item.resolved_at else "open",
                    )
                )
        if not rows:
            self.stdout.write("no mismatches")
            return
        header = (
            "channel",
            "mismatch",
            "entry",
            "order_no",
            "reference",
            "ours",
            "theirs",
            "state",
            "review",
        )
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            self.stdout.write(
                "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )

    def _print_summary(self, reports: list[ReconciliationReport]) -> None:
        for report in reports:
            open_count = report.items.filter(resolved_at__isnull=True).count()
            self.stdout.write(
                f"{report.channel}: {report.statement_lines} statement line(s), "
                f"{report.ledger_entries} ledger entr{'y' if report.ledger_entries == 1 else 'ies'}"
                f", {report.matched} matched, {report.mismatches} mismatch(es)"
                f" ({open_count} open)"
            )
