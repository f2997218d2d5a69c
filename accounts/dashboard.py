"""The operator's dashboard, the admin's index page.

Each app draws its own panels from its own selectors and registers them
here from its admin module (``panel_register``), the way apps hand their
export sections to ``accounts.citizen_data``: this module knows no app above
``accounts``. A panel is shown, and its queries run, only for staff holding
every permission it names, so nobody sees figures of records they may not
view. Days and weeks are China time (Asia/Shanghai), weeks start on Monday.

Charts are small SVG drawings made here on the server: no script, nothing
fetched from anywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

CHINA = ZoneInfo("Asia/Shanghai")


@dataclass(frozen=True)
class Periods:
    """The instants the dashboard's figures are counted between."""

    now: dt.datetime
    today: dt.date
    today_start: dt.datetime
    tomorrow_start: dt.datetime
    week_start: dt.datetime
    day_ago: dt.datetime
    # Figures two panels share, read once per page (``once``).
    _read: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def at(cls, now: dt.datetime | None = None) -> Periods:
        now = (now or timezone.now()).astimezone(CHINA)
        today = now.date()
        start = dt.datetime.combine(today, dt.time.min, tzinfo=CHINA)
        return cls(
            now=now,
            today=today,
            today_start=start,
            tomorrow_start=dt.datetime.combine(
                today + dt.timedelta(days=1), dt.time.min, tzinfo=CHINA
            ),
            week_start=start - dt.timedelta(days=today.weekday()),
            day_ago=now - dt.timedelta(hours=24),
        )

    def once(self, key: str, read: Callable[[], Any]) -> Any:
        """``read()``, called once for this page whichever panel asks first."""
        if key not in self._read:
            self._read[key] = read()
        return self._read[key]


def stamp(value: dt.datetime) -> str:
    """An instant as the admin's date filters write it (China time, with offset)."""
    return str(value.astimezone(CHINA))


def changelist(url: str, **params: Any) -> str:
    """``url`` with a changelist's filter parameters."""
    clean = {k: v for k, v in params.items() if v is not None}
    return f"{url}?{urlencode(clean)}" if clean else url


# --- What a panel shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One headline number; ``tone`` ``warn`` or ``bad`` when it needs attention."""

    label: str
    value: str
    url: str | None = None
    tone: str = ""
    note: str = ""


@dataclass(frozen=True)
class Cell:
    text: str
    url: str | None = None
    tone: str = ""
    chart: SafeString | None = None


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    empty: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    figures: Sequence[Figure] = ()
    chart: SafeString | None = None
    chart_caption: str = ""
    table: Table | None = None
    links: Sequence[tuple[str, str]] = ()  # (label, url)
    wide: bool = False


@dataclass(frozen=True)
class PanelSource:
    key: str
    order: int
    permissions: tuple[str, ...]
    build: Callable[[Periods], Panel]


_sources: dict[str, PanelSource] = {}


def panel_register(
    key: str,
    *,
    order: int,
    permissions: Sequence[str],
    build: Callable[[Periods], Panel],
) -> None:
    """Show ``build(periods)`` on the dashboard to staff holding every one of
    ``permissions`` (``app_label.codename``), in ``order``. Registering a
    key again replaces it."""
    if not permissions:
        raise ValueError("a dashboard panel needs the permissions that let one see its figures")
    _sources[key] = PanelSource(key, order, tuple(permissions), build)


def panels_for(user: Any, periods: Periods | None = None) -> list[Panel]:
    """The panels ``user`` may see, built now (each one's queries run only here)."""
    periods = periods or Periods.at()
    return [
        source.build(periods)
        for source in sorted(_sources.values(), key=lambda s: (s.order, s.key))
        if user.has_perms(source.permissions)
    ]


# --- Charts ------------------------------------------------------------------------------------

TONES = {"": "#417690", "today": "#205067", "warn": "#c27c0e", "bad": "#ba2121", "ok": "#2e7d32"}


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    url: str | None = None
    tone: str = ""
    # A part of ``value`` drawn darker over it (today's share of the week).
    part: float | None = None
    title: str = ""


def _linked(url: str | None, inner: SafeString) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, inner) if url else inner


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


def bars_horizontal(
    bars: Sequence[Bar], *, width: int = 360, row: int = 20, label_width: int = 120
) -> SafeString:
    """One bar per category, longest scale at the largest value; each bar
    links to what it counts."""
    if not bars:
        return mark_safe("")
    top = max((bar.value for bar in bars), default=0) or 1
    value_width = 48
    span = width - label_width - value_width
    height = row * len(bars)
    parts = []
    for n, bar in enumerate(bars):
        y = n * row
        length = max(bar.value / top * span, 1 if bar.value else 0)
        part = ""
        if bar.part:
            part = format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>',
                label_width,
                y + 3,
                _px(max(bar.part / top * span, 1)),
                row - 6,
                TONES["today"],
            )
        inner = format_html(
            '<g><title>{}</title><text x="{}" y="{}" text-anchor="end" class="l">{}</text>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>{}'
            '<text x="{}" y="{}" class="v">{}</text></g>',
            bar.title or f"{bar.label}: {_number(bar.value)}",
            label_width - 6,
            y + row - 6,
            _clip(bar.label, 9),
            label_width,
            y + 3,
            _px(length),
            row - 6,
            TONES.get(bar.tone, TONES[""]),
            part,
            _px(label_width + length + 4),
            y + row - 6,
            _number(bar.value),
        )
        parts.append(_linked(bar.url, inner))
    return format_html(
        '<svg class="dash-chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}"'
        ' xmlns="http://www.w3.org/2000/svg">{}</svg>',
        format_html_join("", "{}", ((p,) for p in parts)),
        w=width,
        h=height,
    )


def bars_vertical(
    bars: Sequence[Bar], *, width: int = 360, height: int = 110, every: int = 1
) -> SafeString:
    """A time series: one column per period, labelled every ``every`` columns."""
    if not bars:
        return mark_safe("")
    peak = max((bar.value for bar in bars), default=0)
    top = peak or 1
    axis = 16  # room for the labels below
    plot = height - axis - 12
    step = width / len(bars)
    parts = []
    for n, bar in enumerate(bars):
        x = n * step
        length = bar.value / top * plot
        label = (
            format_html(
                '<text x="{}" y="{}" text-anchor="middle" class="l">{}</text>',
                _px(x + step / 2),
                height - 3,
                bar.label,
            )
            if n % every == 0
            else ""
        )
        inner = format_html(
            '<g><title>{}</title><rect x="{}" y="{}" width="{}" height="{}" fill="{}"/>{}</g>',
            bar.title or f"{bar.label}: {_number(bar.value)}",
            _px(x + 1),
            _px(12 + plot - length),
            _px(max(step - 2, 1)),
            _px(length),
            TONES.get(bar.tone, TONES[""]),
            label,
        )
        parts.append(_linked(bar.url, inner))
    return format_html(
        '<svg class="dash-chart" role="img" viewBox="0 0 {w} {h}" width="{w}" height="{h}"'
        ' xmlns="http://www.w3.org/2000/svg"><text x="0" y="9" class="v">{top}</text>'
        '<line x1="0" x2="{w}" y1="{base}" y2="{base}" stroke="#999" stroke-width="0.5"/>'
        "{}</svg>",
        format_html_join("", "{}", ((p,) for p in parts)),
        w=width,
        h=height,
        top=_number(peak) if peak else "",
        base=12 + plot,
    )


def rate_bar(rate: float | None, *, width: int = 80) -> SafeString:
    """A share from 0 to 1 as a small gauge (green from 99 %, amber from 90 %)."""
    if rate is None:
        return mark_safe("")
    tone = "ok" if rate >= 0.99 else "warn" if rate >= 0.9 else "bad"
    return format_html(
        '<svg class="dash-gauge" role="img" viewBox="0 0 {w} 10" width="{w}" height="10"'
        ' xmlns="http://www.w3.org/2000/svg"><title>{pct}</title>'
        '<rect width="{w}" height="10" fill="#e8e8e8"/>'
        '<rect width="{}" height="10" fill="{}"/></svg>',
        _px(rate * width),
        TONES[tone],
        w=width,
        pct=percent(rate),
    )


def percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f} %"


def _px(value: float) -> str:
    return f"{value:.1f}"


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
