"""``optitrack results``: the experiment results stored in a collector's database.

Owns: the results command and the plain and rich tables of results (the demo prints them
too). Must not touch: how results are computed (``optitrack.testing``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from ._common import naming_datafile

__all__ = ["print_results", "register"]


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``results`` to the command line."""
    parser = commands.add_parser(
        "results",
        parents=[common],
        help="print the experiment results stored by a collector",
        description="Read a collector's SQLite database and print the results per experiment "
        "and variation: visitors, conversions counted from each visitor's first impression "
        "on, rates, lifts with 95% confidence intervals, revenue.",
    )
    parser.add_argument(
        "--db",
        default="optitrack-events.db",
        help="the collector's database file (default: %(default)s)",
    )
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the results as JSON")
    form.add_argument("--html", metavar="FILE", help="write the results page to FILE")
    parser.add_argument(
        "--datafile",
        default=None,
        help="the project's datafile (a JSON file), to name experiments and variations",
    )
    parser.set_defaults(run=_run)


def _fail(message: str) -> int:
    print(f"optitrack results: error: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    from ..testing import EventsAPI
    from ..testing._html import render_results_html

    if args.db != ":memory:" and not os.path.isfile(args.db):
        return _fail(f"no database at {args.db} (run 'optitrack collector --db {args.db}')")
    try:
        datafile = naming_datafile(args.datafile)
    except ValueError as exc:
        return _fail(str(exc))
    api = EventsAPI(db=args.db, datafile=datafile, record=False)
    try:
        results = api.results()
        if args.json:
            print(json.dumps(results, indent=2))
        elif args.html:
            with open(args.html, "w", encoding="utf-8") as file:
                file.write(render_results_html(results, api.statistics()))
            print(f"wrote {args.html}")
        else:
            print_results(results)
    finally:
        assert api.store is not None
        api.store.close()
    return 0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def _rows(experiment: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    variations = experiment["variations"]
    keys = list(variations[0]["conversions"]) if variations else []
    head = ["variation", "visitors"]
    for key in keys:
        head += [f"{key} (unique/total)", "rate", "lift [95% CI]"]
    head += ["revenue", "per visitor", "lift [95% CI]"]
    rows = []
    for v in variations:
        row = [v["variation_key"] or v["variation_id"], f"{v['visitors']:,}"]
        for key in keys:
            c = v["conversions"][key]
            ci = c["ci"]
            band = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
            row += [
                f"{c['unique']:,}/{c['total']:,}",
                f"{c['rate'] * 100:.2f}%",
                _pct(c["lift"]) + band,
            ]
        ci = v["revenue_ci"]
        band = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
        row += [
            f"{v['revenue']:,}",
            f"{v['revenue_per_visitor']:.2f}",
            _pct(v["revenue_lift"]) + band,
        ]
        rows.append(row)
    return head, rows


def print_results(
    results: Mapping[str, Any], out: Any = None, *, use_rich: bool | None = None
) -> None:
    """Print results as tables: rich's when installed, plain text otherwise.

    Args:
        results: What ``GET /v1/results`` answers.
        out: Where to print (default: standard output).
        use_rich: Draw with rich (``None``: when it is installed).
    """
    out = out or sys.stdout
    if not results["experiments"]:
        print("No impressions yet.", file=out)
        return
    if use_rich is None:
        use_rich = importlib.util.find_spec("rich") is not None
    for experiment in results["experiments"]:
        title = f"{experiment['experiment_key'] or '?'} (experiment {experiment['experiment_id']})"
        head, rows = _rows(experiment)
        if use_rich:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title)
            for n, name in enumerate(head):
                table.add_column(name, justify="left" if n == 0 else "right")
            for row in rows:
                table.add_row(*row)
            Console(file=out, width=200).print(table)
            continue
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        print(title, file=out)
        for row in [head, *rows]:
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            print("  " + "  ".join(cells), file=out)
        print(file=out)
