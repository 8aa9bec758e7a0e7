"""What the Events API stand-in counts from the batches it accepts.

Owns the results (:class:`VariationResults`, :class:`EventsAPIStatistics`), the tally of
one event, the three ways to get tallies out of a body (validated, parsed, or only its
uuids) and :class:`Tallies`, the counters themselves, with the attribution of conversions
to variations.

It must not touch HTTP, faults, locks or waiting: a body it cannot count raises
:class:`BatchError`, which the app (:mod:`._app`) answers, and its owner locks around every
call. It imports only the wire format (:mod:`optitrack._wire`).
"""

# No ``from __future__ import annotations``: these classes say they are from
# ``optitrack.testing`` (see ``__init__``), and typing.get_type_hints (pydantic, docs
# tools) would look the names of string annotations up there, where they are not.

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import pydantic

from .._wire import EventBatch

__all__ = [
    "BatchError",
    "EventsAPIStatistics",
    "Tallies",
    "Tally",
    "VariationResults",
    "find_uuids",
    "parse_tallies",
    "tally_batch",
    "validate_batch",
]

_UUID_VALUE = re.compile(rb'"uuid"\s*:\s*"([^"\\]*)"')
_MAX_ERRORS_SHOWN = 10


@dataclass(frozen=True)
class VariationResults:
    """Results of one variation, attributed the way the Events API backend does.

    A conversion counts for every variation its visitor had an impression for before it
    arrived (the first variation seen per experiment), like ``enrich_decisions`` does. Every
    conversion event counts, not unique visitors.

    Attributes:
        experiment: The rule (experiment) key of the impressions.
        variation: The variation key.
        impressions: Impression events received.
        visitors: Distinct visitors whose first impression in the experiment was this one.
        conversions: Conversions attributed to the variation, per event key.
        revenue: Revenue attributed to the variation.
    """

    experiment: str
    variation: str
    impressions: int
    visitors: int
    conversions: Mapping[str, int]
    revenue: int


@dataclass(frozen=True)
class EventsAPIStatistics:
    """A snapshot of what :class:`EventsAPI` received.

    Attributes:
        requests: Requests to ``POST /v1/events``, whatever was answered.
        statuses: Requests per status answered (hangs and resets are not counted).
        batches: Batches accepted.
        events: Events in accepted batches, duplicates included.
        impressions: Impression events accepted.
        conversions: Conversion events accepted.
        revenue: Sum of the conversions' ``revenue``.
        duplicates: Accepted events whose uuid had already been accepted.
        bytes_received: Body bytes received, as sent on the wire.
        conversions_by_event: Conversions per event key.
        impressions_by_variation: Impressions per ``(experiment key, variation key)``.
        variations: Results per variation, in order of first impression.
    """

    requests: int
    statuses: Mapping[int, int]
    batches: int
    events: int
    impressions: int
    conversions: int
    revenue: int
    duplicates: int
    bytes_received: int
    conversions_by_event: Mapping[str, int]
    impressions_by_variation: Mapping[tuple[str, str], int]
    variations: tuple[VariationResults, ...]

    def as_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready data (what ``GET /v1/stats`` answers).

        Returns:
            A dict of plain JSON values.
        """
        return {
            "requests": self.requests,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "batches": self.batches,
            "events": self.events,
            "impressions": self.impressions,
            "conversions": self.conversions,
            "revenue": self.revenue,
            "duplicates": self.duplicates,
            "bytes_received": self.bytes_received,
            "conversions_by_event": dict(self.conversions_by_event),
            "variations": [
                {
                    "experiment": v.experiment,
                    "variation": v.variation,
                    "impressions": v.impressions,
                    "visitors": v.visitors,
                    "conversions": dict(v.conversions),
                    "revenue": v.revenue,
                }
                for v in self.variations
            ],
        }


# What one accepted event contributes: visitor id, uuid, key, revenue, and the
# (experiment key, variation key) of each decision (empty for a conversion).
Tally: TypeAlias = tuple[str, str, str, int | None, list[tuple[str, str]]]


class BatchError(Exception):
    """A body that cannot be counted: not JSON, or not a batch (the app answers ``400``).

    Args:
        code: The machine-readable reason, ``"invalid_json"`` or ``"invalid_batch"``.
        message: What is wrong.
        details: The validation errors, as JSON-ready data, when there are some.
    """

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def validate_batch(content: bytes) -> EventBatch:
    """Validate a body against the wire format.

    Args:
        content: The decoded body.

    Returns:
        The batch.

    Raises:
        BatchError: The body is not JSON, or breaks the wire format.
    """
    try:
        return EventBatch.model_validate_json(content)
    except pydantic.ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise BatchError("invalid_json", f"body is not JSON: {errors[0]['msg']}") from exc
        listed = [
            {"loc": ".".join(str(part) for part in e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in errors
        ]
        shown = "; ".join(f"{e['loc']}: {e['msg']}" for e in listed[:_MAX_ERRORS_SHOWN])
        more = len(listed) - _MAX_ERRORS_SHOWN
        if more > 0:
            shown += f"; and {more} more"
        raise BatchError("invalid_batch", f"invalid batch: {shown}", listed) from exc


def tally_batch(batch: EventBatch) -> Iterator[Tally]:
    """Tally a validated batch.

    Args:
        batch: The batch.

    Yields:
        What each of its events contributes, in order.
    """
    for visitor in batch.visitors:
        snapshot = visitor.snapshots[0]
        event = snapshot.events[0]
        decisions = snapshot.decisions
        arms = (
            [(d.metadata.rule_key, d.metadata.variation_key) for d in decisions]
            if decisions
            else []
        )
        yield visitor.visitor_id, event.uuid, event.key, event.revenue, arms


def parse_tallies(content: bytes) -> list[Tally]:
    """Parse a body as JSON, without validating it, and tally the shape it counts from.

    Args:
        content: The decoded body.

    Returns:
        What each of its events contributes, in order; nothing is tallied from a body
        that raises.

    Raises:
        BatchError: The body is not JSON (``NaN`` and infinities included), or lacks what
            is counted.
    """
    try:
        data = json.loads(content, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BatchError("invalid_json", f"body is not JSON: {exc}") from exc
    try:
        return _tally_json(data)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise BatchError("invalid_batch", f"invalid batch: {exc!r}") from exc


def find_uuids(content: bytes) -> list[bytes]:
    """Pick the ``"uuid"`` values out of a body, without parsing it.

    Args:
        content: The decoded body.

    Returns:
        The values, in order (a string tag named ``uuid`` counts too).
    """
    return _UUID_VALUE.findall(content)


def _tally_json(data: Any) -> list[Tally]:
    # Unvalidated input: a shape error raises KeyError, TypeError or IndexError, which the
    # caller turns into a 400. Built eagerly so that nothing is counted from a bad batch.
    tallies: list[Tally] = []
    for visitor in data["visitors"]:
        snapshot = visitor["snapshots"][0]
        event = snapshot["events"][0]
        decisions = snapshot.get("decisions")
        arms = (
            [(d["metadata"]["rule_key"], d["metadata"]["variation_key"]) for d in decisions]
            if decisions
            else []
        )
        revenue = event.get("revenue")
        tallies.append(
            (
                str(visitor["visitor_id"]),
                str(event["uuid"]),
                str(event["key"]),
                revenue if type(revenue) is int else None,
                arms,
            )
        )
    return tallies


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


class _Arm:
    __slots__ = ("conversions", "impressions", "revenue", "visitors")

    def __init__(self) -> None:
        self.impressions = 0
        self.visitors = 0
        self.conversions: Counter[str] = Counter()
        self.revenue = 0


class Tallies:
    """The counters of one app, since it was created or last reset.

    Not thread-safe: the app holds its lock around every call and every read.

    Args:
        index: Keep the uuids seen and each visitor's first variation, to find duplicates
            and attribute conversions (memory grows with the events). ``False`` when a
            database does both: then only counters are kept, bounded however long it runs.
    """

    def __init__(self, index: bool = True) -> None:
        self.index = index
        self.request_count = 0
        self.statuses: Counter[int] = Counter()
        self.batch_count = 0
        self.event_count = 0
        self.impression_count = 0
        self.conversion_count = 0
        self.revenue = 0
        self.bytes_received = 0
        self.conversions_by_event: Counter[str] = Counter()
        self.duplicates: dict[str, int] = {}
        self.duplicate_count = 0
        self._arms: dict[tuple[str, str], _Arm] = {}
        self._first_seen: dict[str, dict[str, str]] = {}
        self._uuids: set[str] = set()

    def count_request(self, size: int, status: int | None) -> None:
        """Count a request to ``POST /v1/events``: its body's size and the status answered.

        Args:
            size: The body's size as sent on the wire.
            status: The status answered; ``None`` for a hang or a reset.
        """
        self.request_count += 1
        self.bytes_received += size
        if status is not None:
            self.statuses[status] += 1

    def count_batch(self, tallies: Iterable[Tally], uuids: Sequence[bytes]) -> None:
        """Count an accepted batch, from its tallies or, when not parsed, its uuids.

        Args:
            tallies: What each event contributes (empty when the body was not parsed).
            uuids: The uuids picked out of an unparsed body (empty otherwise).
        """
        self.batch_count += 1
        if uuids:
            self._count_uuids(uuids)
        for tally in tallies:
            self._count(tally)

    def impressions(self) -> dict[tuple[str, str], int]:
        """Return the impressions per ``(experiment key, variation key)``.

        Returns:
            A new dict.
        """
        return {arm: stats.impressions for arm, stats in self._arms.items()}

    def statistics(self) -> EventsAPIStatistics:
        """Return a snapshot of the counters, with results per variation.

        Returns:
            The snapshot.
        """
        return EventsAPIStatistics(
            requests=self.request_count,
            statuses=dict(self.statuses),
            batches=self.batch_count,
            events=self.event_count,
            impressions=self.impression_count,
            conversions=self.conversion_count,
            revenue=self.revenue,
            duplicates=self.duplicate_count,
            bytes_received=self.bytes_received,
            conversions_by_event=dict(self.conversions_by_event),
            impressions_by_variation=self.impressions(),
            variations=tuple(
                VariationResults(
                    experiment=experiment,
                    variation=variation,
                    impressions=stats.impressions,
                    visitors=stats.visitors,
                    conversions=dict(stats.conversions),
                    revenue=stats.revenue,
                )
                for (experiment, variation), stats in self._arms.items()
            ),
        )

    def _count_uuids(self, uuids: Sequence[bytes]) -> None:
        self.event_count += len(uuids)
        if not self.index:
            return
        seen = self._uuids
        for raw in uuids:
            uuid = raw.decode("ascii", "replace")
            if uuid in seen:
                self.duplicates[uuid] = self.duplicates.get(uuid, 1) + 1
                self.duplicate_count += 1
            else:
                seen.add(uuid)

    def _count(self, tally: Tally) -> None:
        visitor_id, uuid, key, revenue, arms = tally
        self.event_count += 1
        index = self.index
        if not index:
            pass
        elif uuid in self._uuids:
            self.duplicates[uuid] = self.duplicates.get(uuid, 1) + 1
            self.duplicate_count += 1
        else:
            self._uuids.add(uuid)
        if arms:
            self.impression_count += 1
            if not index:
                for arm_key in arms:
                    arm = self._arms.get(arm_key)
                    if arm is None:
                        arm = self._arms[arm_key] = _Arm()
                    arm.impressions += 1
                return
            seen = self._first_seen.setdefault(visitor_id, {})
            for experiment, variation in arms:
                arm = self._arms.get((experiment, variation))
                if arm is None:
                    arm = self._arms[experiment, variation] = _Arm()
                arm.impressions += 1
                if experiment not in seen:
                    seen[experiment] = variation
                    arm.visitors += 1
            return
        self.conversion_count += 1
        self.conversions_by_event[key] += 1
        if revenue is not None:
            self.revenue += revenue
        for experiment, variation in self._first_seen.get(visitor_id, {}).items():
            arm = self._arms[experiment, variation]
            arm.conversions[key] += 1
            if revenue is not None:
                arm.revenue += revenue
