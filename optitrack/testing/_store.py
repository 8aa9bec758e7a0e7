"""The collector's event store: SQLite, one row per event uuid, and the results from it.

Owns :class:`EventStore`: the schema, inserting a request's events in one transaction
(de-duplicated by uuid, across restarts when the database is a file), and the results
query (a visitor's first impression per experiment, conversions joined on timestamp at or
after it). The statistics on top of the counts are :mod:`._results`'.

It must not touch HTTP or the event loop: its methods are blocking, and the app calls them
in a worker thread (``anyio.to_thread.run_sync``). One lock serializes them, so a store may
be shared by threads. It imports nothing from the package.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["EventRow", "EventStore", "NotJSONError", "Tables", "rows_from_body"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    uuid TEXT PRIMARY KEY,
    visitor_id TEXT NOT NULL,
    key TEXT NOT NULL,
    impression INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    revenue INTEGER,
    value REAL
);
CREATE TABLE IF NOT EXISTS decisions (
    uuid TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    experiment_key TEXT NOT NULL,
    variation_id TEXT NOT NULL,
    variation_key TEXT NOT NULL,
    PRIMARY KEY (uuid, experiment_id)
);
CREATE INDEX IF NOT EXISTS events_by_visitor ON events (visitor_id, impression, timestamp);
"""

# A visitor's first impression per experiment (ties broken by uuid), and the variation of
# it: the visitor's variation in that experiment.
_FIRSTS = """
WITH ranked AS (
    SELECT d.experiment_id, d.experiment_key, d.variation_id, d.variation_key,
           e.visitor_id, e.timestamp,
           ROW_NUMBER() OVER (
               PARTITION BY d.experiment_id, e.visitor_id ORDER BY e.timestamp, e.uuid
           ) AS n
    FROM decisions AS d JOIN events AS e ON e.uuid = d.uuid
    WHERE d.experiment_id != ''
),
firsts AS (SELECT * FROM ranked WHERE n = 1)
"""

_VISITORS = (
    _FIRSTS
    + """
SELECT experiment_id, MAX(experiment_key), variation_id, MAX(variation_key), COUNT(*)
FROM firsts GROUP BY experiment_id, variation_id
"""
)

# Per variation and event key: converters, conversions, sums; only conversions at or after
# the visitor's first impression in the experiment count.
_CONVERSIONS = (
    _FIRSTS
    + """
, counted AS (
    SELECT f.experiment_id, f.variation_id, c.key, c.visitor_id,
           COUNT(*) AS total, SUM(COALESCE(c.revenue, 0)) AS revenue,
           SUM(COALESCE(c.value, 0)) AS value
    FROM firsts AS f
    JOIN events AS c
      ON c.visitor_id = f.visitor_id AND c.impression = 0 AND c.timestamp >= f.timestamp
    GROUP BY f.experiment_id, f.variation_id, c.key, c.visitor_id
)
SELECT experiment_id, variation_id, key, COUNT(*), SUM(total), SUM(revenue), SUM(value)
FROM counted GROUP BY experiment_id, variation_id, key
"""
)

# Per variation: the sum of each visitor's revenue squared (all event keys together), for
# the variance of revenue per visitor.
_SQUARES = (
    _FIRSTS
    + """
, per_visitor AS (
    SELECT f.experiment_id, f.variation_id, SUM(c.revenue) AS revenue
    FROM firsts AS f
    JOIN events AS c
      ON c.visitor_id = f.visitor_id AND c.impression = 0 AND c.timestamp >= f.timestamp
    WHERE c.revenue IS NOT NULL
    GROUP BY f.experiment_id, f.variation_id, c.visitor_id
)
SELECT experiment_id, variation_id, SUM(revenue * revenue)
FROM per_visitor GROUP BY experiment_id, variation_id
"""
)


@dataclass(frozen=True)
class EventRow:
    """One event as stored.

    Attributes:
        uuid: The event's uuid.
        visitor_id: The visitor.
        key: The event key (``campaign_activated`` for an impression).
        timestamp: Milliseconds since the epoch.
        revenue: The revenue, or ``None``.
        value: The value, or ``None``.
        decisions: ``(campaign_id, experiment_id, experiment_key, variation_id,
            variation_key)`` per decision; empty for a conversion.
    """

    uuid: str
    visitor_id: str
    key: str
    timestamp: int
    revenue: int | None
    value: float | None
    decisions: tuple[tuple[str, str, str, str, str], ...]


@dataclass(frozen=True)
class Tables:
    """The raw counts the results are computed from.

    Attributes:
        visitors: ``(experiment_id, experiment_key, variation_id, variation_key,
            visitors)`` rows.
        conversions: ``(experiment_id, variation_id, event_key, unique, total, revenue,
            value)`` rows.
        squares: ``(experiment_id, variation_id, revenue_squares)`` rows: the sum of each
            visitor's revenue squared, for the variance of revenue per visitor.
    """

    visitors: list[tuple[str, str, str, str, int]]
    conversions: list[tuple[str, str, str, int, int, int, float]]
    squares: list[tuple[str, str, int]]


def rows_from_body(content: bytes) -> list[EventRow]:
    """Read the stored fields of each event of a body already accepted as a batch.

    Args:
        content: The decoded body (valid JSON with the batch's shape).

    Returns:
        One row per visitor entry, in order.

    Raises:
        NotJSONError: The body is not JSON (``NaN`` and infinities included).
        KeyError, TypeError, IndexError, ValueError: The body lacks what is stored.
    """
    try:
        data = json.loads(content, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN and infinities
        raise NotJSONError(str(exc)) from exc
    rows = []
    for visitor in data["visitors"]:
        snapshot = visitor["snapshots"][0]
        event = snapshot["events"][0]
        revenue = event.get("revenue")
        value = event.get("value")
        decisions = tuple(
            (
                str(d["campaign_id"]),
                str(d["experiment_id"]),
                str((d.get("metadata") or {}).get("rule_key", "")),
                str(d.get("variation_id") or ""),
                str((d.get("metadata") or {}).get("variation_key", "")),
            )
            for d in snapshot.get("decisions") or ()
        )
        rows.append(
            EventRow(
                uuid=str(event["uuid"]),
                visitor_id=str(visitor["visitor_id"]),
                key=str(event["key"]),
                timestamp=int(event["timestamp"]),
                revenue=revenue if type(revenue) is int else None,
                value=float(value) if isinstance(value, (int, float)) else None,
                decisions=decisions,
            )
        )
    return rows


class NotJSONError(ValueError):
    """A body that is not JSON."""


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


class EventStore:
    """Events in SQLite (WAL for a file), unique by uuid.

    Args:
        path: The database file, created when missing; ``":memory:"`` keeps it in memory.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"<EventStore {self.path!r}>"

    def add(self, rows: Sequence[EventRow]) -> int:
        """Store a request's events in one transaction; a uuid already stored is skipped.

        Args:
            rows: The events.

        Returns:
            How many were new (the others were duplicates).
        """
        with self._lock:
            db = self._db
            before = db.total_changes
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.uuid,
                            r.visitor_id,
                            r.key,
                            1 if r.decisions else 0,
                            r.timestamp,
                            r.revenue,
                            r.value,
                        )
                        for r in rows
                    ],
                )
                new = db.total_changes - before
                db.executemany(
                    "INSERT OR IGNORE INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
                    [(r.uuid, *d) for r in rows for d in r.decisions],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return new

    def count(self) -> int:
        """Return how many distinct events are stored."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
            return int(n)

    def tables(self) -> Tables:
        """Count visitors and conversions per variation, in SQL.

        Returns:
            The raw counts.
        """
        with self._lock:
            visitors = self._db.execute(_VISITORS).fetchall()
            conversions = self._db.execute(_CONVERSIONS).fetchall()
            squares = self._db.execute(_SQUARES).fetchall()
        return Tables(visitors=visitors, conversions=conversions, squares=squares)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
