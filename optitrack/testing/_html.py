"""The results page of the Events API stand-in (what ``GET /`` answers).

Owns the rendering of an :class:`EventsAPIStatistics` snapshot as one self-refreshing HTML
page, and of the experiment results (with a database) as a page with an inline SVG chart
per experiment and event key: no external asset, every value escaped.

It must not touch the app's state or HTTP: it gets a snapshot, returns a string. It imports
only :mod:`._tallies`, for the snapshot's type.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from ._tallies import EventsAPIStatistics

__all__ = ["render_html", "render_results_html"]


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


_WIDTH, _ROW, _LABEL = 560, 28, 160


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def _chart(experiment: Mapping[str, Any], key: str) -> str:
    # One bar per variation (its conversion rate), with its lift's interval drawn as a
    # line over the baseline's rate scaled by (1 + bound).
    esc = html.escape
    variations = experiment["variations"]
    rates = [v["conversions"][key]["rate"] for v in variations]
    base = rates[0]
    tops = list(rates)
    for v in variations:
        ci = v["conversions"][key].get("ci")
        if ci:
            tops.append(base * (1 + ci[1]))
    scale = (_WIDTH - _LABEL - 20) / (max(tops) or 1)
    height = _ROW * len(variations) + 10
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{_WIDTH}' height='{height}'"
        f" role='img' aria-label='{esc(key)} conversion rate per variation'>"
    ]
    for n, v in enumerate(variations):
        y = 5 + n * _ROW
        counts = v["conversions"][key]
        width = counts["rate"] * scale
        label = esc(v["variation_key"] or v["variation_id"])
        parts.append(
            f"<text x='0' y='{y + 16}' font-size='12'>{label}</text>"
            f"<rect class='bar' x='{_LABEL}' y='{y + 4}' width='{width:.1f}' height='16'"
            f" fill='{'#888' if n == 0 else '#3b7dd8'}'><title>{counts['rate'] * 100:.2f}%"
            "</title></rect>"
        )
        ci = counts.get("ci")
        if ci:
            lo, hi = (_LABEL + base * (1 + b) * scale for b in ci)
            parts.append(
                f"<line class='ci' x1='{lo:.1f}' x2='{hi:.1f}' y1='{y + 12}' y2='{y + 12}'"
                " stroke='#000' stroke-width='2'/>"
                f"<circle class='point' cx='{_LABEL + width:.1f}' cy='{y + 12}' r='3'/>"
            )
    parts.append("</svg>")
    return "".join(parts)


def render_results_html(results: Mapping[str, Any], stats: EventsAPIStatistics) -> str:
    """Render the experiment results page (what ``GET /`` answers with a database).

    Args:
        results: What ``GET /v1/results`` answers.
        stats: The counters, shown above the results.

    Returns:
        A complete HTML document, without external assets.
    """
    esc = html.escape
    sections = []
    for experiment in results["experiments"]:
        name = experiment["experiment_key"] or experiment["experiment_id"]
        variations = experiment["variations"]
        keys = list(variations[0]["conversions"]) if variations else []
        head = ["variation", "visitors"]
        for key in keys:
            head += [
                f"{key} converters",
                f"{key} conversions",
                f"{key} rate",
                f"{key} lift",
                f"{key} 95% CI",
            ]
        head += ["revenue", "revenue / visitor", "lift", "95% CI"]
        rows = []
        for v in variations:
            cells = [v["variation_key"] or v["variation_id"], f"{v['visitors']:,}"]
            for key in keys:
                c = v["conversions"][key]
                ci = c.get("ci")
                cells += [
                    f"{c['unique']:,}",
                    f"{c['total']:,}",
                    f"{c['rate'] * 100:.2f}%",
                    _pct(c.get("lift")),
                    f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "-",
                ]
            rci = v.get("revenue_ci")
            cells += [
                f"{v['revenue']:,}",
                f"{v['revenue_per_visitor']:.2f}",
                _pct(v.get("revenue_lift")),
                f"[{_pct(rci[0])}, {_pct(rci[1])}]" if rci else "-",
            ]
            rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        header = "".join(f"<th>{esc(h)}</th>" for h in head)
        charts = "".join(f"<h3>{esc(key)}</h3>{_chart(experiment, key)}" for key in keys)
        sections.append(
            f"<section class='experiment' data-experiment-id='{esc(experiment['experiment_id'])}'>"
            f"<h2>{esc(name)}</h2><table class='results'><tr>{header}</tr>{''.join(rows)}"
            f"</table>{charts}</section>"
        )
    body = "".join(sections) or "<p>No impressions yet.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='5'>"
        "<title>optitrack collector: results</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:0 0 1em}"
        "td,th{border:1px solid #999;padding:2px 8px;text-align:right}</style></head><body>"
        "<h1>optitrack collector: results</h1>"
        f"<p id='summary'>{stats.events:,} events received in {stats.batches:,} batches,"
        f" {stats.duplicates:,} duplicates.</p>"
        "<p>Visitors: unique users with an impression, in the variation of their first one."
        " Conversions count from that first impression's timestamp on.</p>"
        f"{body}</body></html>"
    )
