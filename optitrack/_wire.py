"""The Events API wire format, as pydantic models.

One request body is an :class:`EventBatch`; its tree::

    EventBatch
    └── visitors: [Visitor]                       one visitor per user event
        ├── attributes: [VisitorAttribute]
        └── snapshots: [Snapshot]                 exactly one
            ├── decisions: [Decision]             impressions only
            │   └── metadata: DecisionMetadata
            └── events: [SnapshotEvent]           exactly one

The models are strict: field names are the wire's snake_case names, an unknown field is an
error, and no value is coerced (a string is not a number, a number is not a string, an
integer is not a bool). Floats must be finite. They validate what goes on the wire in the
stand-in collector (:mod:`optitrack.testing`) and in tests, and document the format; the
client's hot path writes JSON bytes by hand and never builds them.

Optional fields (``region``, ``decisions``, ``revenue``, ``value``, ``tags``) may be absent
or ``null``.

Owns: the payload's models, for the stand-in and the tests. Must not touch: the hot path,
which serializes by hand (``_events.py``) to the same shape.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    StrictInt,
    StrictStr,
)

__all__ = [
    "Decision",
    "DecisionMetadata",
    "EventBatch",
    "Snapshot",
    "SnapshotEvent",
    "Visitor",
    "VisitorAttribute",
]

RuleType = Literal["experiment", "feature-test", "rollout", "holdout"]
"""The ``metadata.rule_type`` values the SDKs send."""

MAX_ATTRIBUTE_NUMBER = 2**53
"""The largest absolute value of a numeric attribute the SDKs send."""


def _finite_json(value: JsonValue) -> JsonValue:
    # pydantic's JSON parser accepts the NaN and Infinity tokens, which are not JSON: the
    # real endpoint would reject the whole body, so the model must too.
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("NaN and Infinity are not JSON")
    elif isinstance(value, dict):
        for item in value.values():
            _finite_json(item)
    elif isinstance(value, list):
        for item in value:
            _finite_json(item)
    return value


def _attribute_number(value: str | bool | int | float) -> str | bool | int | float:
    if not isinstance(value, (str, bool)) and abs(value) > MAX_ATTRIBUTE_NUMBER:
        raise ValueError("a number attribute must be at most 2**53 in absolute value")
    return value


AttributeValue = Annotated[
    StrictStr | StrictBool | StrictInt | float, AfterValidator(_attribute_number)
]
Tags = Annotated[dict[str, JsonValue], AfterValidator(_finite_json)]


class _WireModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
    )


class VisitorAttribute(_WireModel):
    """One visitor attribute, sent for results segmentation.

    Attributes:
        entity_id: The datafile attribute's id, or the key itself for ``$opt_`` keys.
        key: The attribute key.
        type: Always ``"custom"``.
        value: A string, a bool, or a finite number of absolute value at most 2**53.
    """

    entity_id: StrictStr
    key: StrictStr
    type: Literal["custom"]
    value: AttributeValue


class DecisionMetadata(_WireModel):
    """What the SDK decided, by key, for an impression.

    Attributes:
        flag_key: The flag key; ``""`` for Activate.
        rule_key: The experiment or rule key; ``""`` when no rule matched.
        rule_type: ``experiment`` (Activate), ``feature-test``, ``rollout`` or ``holdout``.
        variation_key: The variation key; ``""`` when none.
        enabled: The variation's ``featureEnabled``; always true for Activate.
    """

    flag_key: StrictStr
    rule_key: StrictStr
    rule_type: RuleType
    variation_key: StrictStr
    enabled: StrictBool


class Decision(_WireModel):
    """One decision of an impression, by id.

    Attributes:
        campaign_id: The experiment's layer id (or the experiment id when it has none).
        experiment_id: The experiment or rule id; ``""`` when no rule matched.
        variation_id: The variation id when it is all digits, otherwise ``None``.
        metadata: The same decision by key.
    """

    campaign_id: StrictStr
    experiment_id: StrictStr
    variation_id: StrictStr | None
    metadata: DecisionMetadata


class SnapshotEvent(_WireModel):
    """The one event of a snapshot: an impression or a conversion.

    Attributes:
        entity_id: The campaign id (impression) or the datafile event's id (conversion).
        key: ``campaign_activated`` (impression) or the event key (conversion).
        timestamp: Milliseconds since the epoch.
        uuid: A unique id per event; a server may de-duplicate on it.
        revenue: Revenue in minor currency units, when the tags carried an integer.
        value: A numeric value, when the tags carried a number.
        tags: The caller's event tags, as given (any JSON object without NaN or Infinity).
    """

    entity_id: StrictStr
    key: StrictStr
    timestamp: StrictInt
    uuid: StrictStr
    revenue: StrictInt | None = None
    value: float | None = None
    tags: Tags | None = None


class Snapshot(_WireModel):
    """What happened to a visitor: one event, with the decisions of an impression.

    Attributes:
        decisions: The decisions of an impression; absent for a conversion.
        events: Exactly one event.
    """

    decisions: list[Decision] | None = None
    events: Annotated[list[SnapshotEvent], Field(min_length=1, max_length=1)]


class Visitor(_WireModel):
    """One user event, with its user.

    Attributes:
        visitor_id: The user id (never the bucketing id).
        attributes: The user's attributes that the datafile knows, plus ``$opt_`` ones.
        snapshots: Exactly one snapshot.
    """

    visitor_id: StrictStr
    attributes: list[VisitorAttribute]
    snapshots: Annotated[list[Snapshot], Field(min_length=1, max_length=1)]


class EventBatch(_WireModel):
    """One request body of ``POST /v1/events``.

    Attributes:
        account_id: The datafile's ``accountId``.
        project_id: The datafile's ``projectId``.
        revision: The datafile's ``revision``.
        client_name: The SDK's name.
        client_version: The SDK's version.
        anonymize_ip: The datafile's ``anonymizeIP``.
        enrich_decisions: Always true: the backend attributes conversions to variations.
        visitors: At least one visitor, one per user event.
        region: The datafile's region; Optimizely's Go SDK sends it, the Python SDK does not.
    """

    account_id: StrictStr
    project_id: StrictStr
    revision: StrictStr
    client_name: StrictStr
    client_version: StrictStr
    anonymize_ip: StrictBool
    enrich_decisions: StrictBool
    visitors: Annotated[list[Visitor], Field(min_length=1)]
    region: StrictStr | None = None
