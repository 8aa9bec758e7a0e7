"""The results page of the Events API stand-in (what ``GET /`` answers).

Owns the rendering of an :class:`EventsAPIStatistics` snapshot as one self-refreshing HTML
page, every value escaped.

It must not touch the app's state or HTTP: it gets a snapshot, returns a string. It imports
only :mod:`._tallies`, for the snapshot's type.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

from ._tallies import EventsAPIStatistics

__all__ = ["render_html"]


def render_html(stats: EventsAPIStatistics) -> str:
    """Render the results page.

    Args:
        stats: The snapshot to show.

    Returns:
        A complete HTML document.
    """
    esc = html.escape

    def table(head: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
        cells = "".join(f"<th>{esc(h)}</th>" for h in head)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows
        )
        return f"<table><tr>{cells}</tr>{body}</table>"

    summary = table(
        ["requests", "batches", "events", "impressions", "conversions", "revenue", "duplicates"],
        [
            [
                stats.requests,
                stats.batches,
                stats.events,
                stats.impressions,
                stats.conversions,
                stats.revenue,
                stats.duplicates,
            ]
        ],
    )
    statuses = table(["status", "requests"], sorted(stats.statuses.items()))
    conversions = table(["event key", "conversions"], sorted(stats.conversions_by_event.items()))
    variations = table(
        ["experiment", "variation", "impressions", "visitors", "conversions", "revenue"],
        [
            [
                v.experiment,
                v.variation,
                v.impressions,
                v.visitors,
                ", ".join(f"{k}: {n}" for k, n in sorted(v.conversions.items())) or "-",
                v.revenue,
            ]
            for v in stats.variations
        ],
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='2'>"
        "<title>optitrack Events API stand-in</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:0 0 1em}"
        "td,th{border:1px solid #999;padding:2px 8px;text-align:left}</style></head><body>"
        "<h1>optitrack Events API stand-in</h1>"
        f"{summary}<h2>Responses</h2>{statuses}"
        f"<h2>Conversions per event</h2>{conversions}"
        f"<h2>Impressions per variation</h2>{variations}</body></html>"
    )
