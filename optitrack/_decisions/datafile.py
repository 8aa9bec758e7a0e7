"""The project datafile: its shape, and validating it on the way in.

The pydantic models mirror the datafile's camelCase JSON (versions 2, 3 and 4). They check
what Optimizely's own JSON schema checks (required keys and their types) plus
``endOfRange`` in ``0..10000``, and accept everything Optimizely accepts: unknown keys,
empty traffic ranges, non-numeric ids, missing ``featureEnabled``, and any value where its
schema has no type (flags read by their truth, variable values cast as its SDK casts). A
datafile that fails raises :class:`~optitrack.DatafileError` with one ``location:
message`` line per problem.

Owns: the datafile's models and turning bytes, text, a path or a mapping into a validated
:class:`Datafile`. Must not touch: indexing (:mod:`.project`), deciding (:mod:`.engine`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from .._exceptions import DatafileError

__all__ = ["Datafile", "DatafileSource", "parse_datafile"]

MAX_END_OF_RANGE = 10_000

#: How deeply a datafile's JSON, or an audience's ``conditions``, may nest: far more than
#: any real datafile needs, and little enough that nothing that walks it can overflow the
#: stack.
MAX_DEPTH = 100


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _truth(value: Any) -> bool:
    return bool(value)


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _id_text(value: Any) -> Any:
    # null and numbers as text; anything else (a list...) fails as "not a string".
    if value is None:
        return ""
    if isinstance(value, int | float):
        return json.dumps(value)
    return value


#: A flag outside Optimizely's JSON schema, which its SDK reads by truth: ``1``, ``"yes"``
#: are true, ``0``, ``""``, ``null`` false.
LaxBool = Annotated[bool, pydantic.BeforeValidator(_truth)]


class _Model(BaseModel):
    # Unknown keys are ignored, as in Optimizely's JSON schema; the scalars it types are
    # strict (a number is not a string, a float or a bool is not an integer), as in its
    # draft 4; the others are as lax as its SDK.
    model_config = ConfigDict(
        alias_generator=_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class TrafficAllocation(_Model):
    """One range of a traffic allocation: buckets below ``end_of_range`` go to ``entity_id``."""

    entity_id: StrictStr
    end_of_range: StrictInt = Field(ge=0, le=MAX_END_OF_RANGE)


class VariableUsage(_Model):
    """A variation's value for one feature variable (by the variable's id)."""

    id: StrictStr
    value: Any  # a string in practice; Optimizely's SDK casts whatever it finds


class Variation(_Model):
    """A variation of an experiment or rollout rule."""

    id: StrictStr
    key: StrictStr
    # Optimizely's SDK accepts null for both (no featureEnabled, no variables), and any
    # value for featureEnabled, of which it tests the truth; but Is Feature Enabled asks
    # for true itself (``is True``), so that is kept too.
    feature_enabled: LaxBool = False
    feature_enabled_is_true: bool = Field(default=False, exclude=True, repr=False)
    variables: tuple[VariableUsage, ...] = ()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _keep_true(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = {
                **data,
                "featureEnabledIsTrue": data.get("featureEnabled", data.get("feature_enabled"))
                is True,
            }
        return data

    @pydantic.field_validator("variables", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any) -> Any:
        return () if value is None else value


class Experiment(_Model):
    """An experiment, a feature test or a rollout rule (they share one shape)."""

    id: StrictStr
    key: StrictStr
    layer_id: StrictStr
    status: StrictStr
    variations: tuple[Variation, ...]
    traffic_allocation: tuple[TrafficAllocation, ...]
    audience_ids: tuple[StrictStr, ...]
    audience_conditions: Any = None
    forced_variations: dict[StrictStr, Any]
    type: Any = None  # "fr" (feature rollout), "td" (targeted delivery)... not checked

    @property
    def is_running(self) -> bool:
        """Whether the experiment is ``Running`` (only running ones bucket users)."""
        return self.status == "Running"


class Group(_Model):
    """A group of mutually exclusive (``random``) or overlapping experiments."""

    id: StrictStr
    policy: StrictStr
    traffic_allocation: tuple[TrafficAllocation, ...]
    experiments: tuple[Experiment, ...]


class Event(_Model):
    """A conversion event that Track can record."""

    id: StrictStr
    key: StrictStr
    experiment_ids: tuple[StrictStr, ...]


class Attribute(_Model):
    """A custom attribute that may be sent with events."""

    id: StrictStr
    key: StrictStr


class Audience(_Model):
    """A legacy audience, whose ``conditions`` is a JSON document in a string."""

    id: StrictStr
    name: StrictStr
    conditions: StrictStr


class TypedAudience(_Model):
    """A typed audience, whose ``conditions`` is JSON (it overrides a legacy one by id)."""

    id: StrictStr
    name: StrictStr = ""
    conditions: Any


class Variable(_Model):
    """A feature variable declaration: its type and default value."""

    id: StrictStr
    key: StrictStr
    type: StrictStr
    default_value: Any  # a string in practice; Optimizely's SDK casts whatever it finds
    sub_type: StrictStr | None = None


class FeatureFlag(_Model):
    """A feature flag: experiment rules, then a rollout, and its variables."""

    # Not in Optimizely's JSON schema: null and numbers are taken, as text.
    id: Annotated[StrictStr, pydantic.BeforeValidator(_id_text)]
    key: StrictStr
    experiment_ids: tuple[StrictStr, ...] = ()
    rollout_id: StrictStr = ""
    variables: tuple[Variable, ...] = ()


class Rollout(_Model):
    """A rollout: its rules, the last of which is "Everyone Else"."""

    id: StrictStr
    experiments: tuple[Experiment, ...]


class Holdout(_Model):
    """A holdout: users bucketed into it get the flag's default (off) decision."""

    id: StrictStr
    key: StrictStr
    status: StrictStr
    variations: tuple[Variation, ...] = ()
    traffic_allocation: tuple[TrafficAllocation, ...] = ()
    audience_ids: tuple[StrictStr, ...] = ()
    audience_conditions: Any = None
    included_rules: tuple[StrictStr, ...] | None = None
    layer_id: StrictStr = ""
    # Read for its truthiness only, as Optimizely's SDK does, so any JSON value is accepted.
    exclude_targeted_deliveries: Any = False


class Integration(_Model):
    """A third-party integration (ODP and such); kept for completeness."""

    key: StrictStr
    host: StrictStr | None = None
    public_key: StrictStr | None = None


class Datafile(_Model):
    """A project datafile (versions 2, 3 and 4), as validated on load."""

    version: Literal["2", "3", "4"]
    account_id: StrictStr
    project_id: StrictStr
    revision: StrictStr
    # Not in Optimizely's JSON schema: its SDK takes any value, and tests its truth.
    anonymize_ip: LaxBool = Field(default=False, alias="anonymizeIP")
    # Sent only when a boolean, as Optimizely's SDK does.
    bot_filtering: Annotated[bool | None, pydantic.BeforeValidator(_bool_or_none)] = None
    send_flag_decisions: LaxBool = False
    region: Any = None  # "EU" in any case is the EU; anything else, the US
    sdk_key: StrictStr | None = None
    environment_key: StrictStr | None = None
    attributes: tuple[Attribute, ...]
    audiences: tuple[Audience, ...]
    typed_audiences: tuple[TypedAudience, ...] = ()
    events: tuple[Event, ...]
    experiments: tuple[Experiment, ...]
    groups: tuple[Group, ...]
    feature_flags: tuple[FeatureFlag, ...] = ()
    rollouts: tuple[Rollout, ...] = ()
    holdouts: tuple[Holdout, ...] = ()
    local_holdouts: tuple[Holdout, ...] = ()
    integrations: tuple[Integration, ...] = ()


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be a boolean",
    "list_type": "must be an array",
    "tuple_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.isidentifier():  # a key of the caller's (a newline must not forge)
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out or "(datafile)"


def _describe(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "less_than_equal":
        message = f"must be <= {ctx['le']}"
    elif kind == "greater_than_equal":
        message = f"must be >= {ctx['ge']}"
    elif kind == "literal_error":
        message = f"must be one of {ctx['expected']}"
    else:
        message = _MESSAGES.get(kind, error["msg"])
    got = error.get("input")
    if (kind != "missing" and isinstance(got, str | int | float | bool)) or got is None:
        message += f" (got {got!r})"
    return f"{_location(error['loc'])}: {message}"


def _looks_like_url(text: str) -> bool:
    return text.strip().lower().startswith(("http://", "https://"))


def _read(source: DatafileSource) -> tuple[Any, str | None]:
    """The parsed JSON of a datafile source, and its text (``None`` for a mapping)."""
    if isinstance(source, Mapping):
        return source, None
    if not isinstance(source, str | bytes | bytearray | os.PathLike):
        raise TypeError(
            f"a datafile is JSON text or bytes, a path or a mapping, not {type(source).__name__}"
        )
    where = "(json)"
    if isinstance(source, str) and not source.lstrip().startswith(("{", "[")):
        if _looks_like_url(source) and not Path(source).exists():
            raise DatafileError(
                [
                    f"(datafile {source!r}): a URL is not a datafile; to fetch the datafile "
                    "from Optimizely, pass sdk_key= (and datafile_url_template= for another "
                    "server)"
                ]
            )
        source = Path(source)  # not JSON text: a path given as a string
    if isinstance(source, os.PathLike):
        where = f"(file {os.fspath(source)!r})"
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise DatafileError([f"{where}: {exc.strerror or exc}"]) from exc
    try:
        text = source if isinstance(source, str) else bytes(source).decode("utf-8")
        return json.loads(text), text
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DatafileError([f"{where}: not valid JSON: {exc}"]) from exc
    except RecursionError as exc:
        raise DatafileError([f"{where}: nested deeper than {MAX_DEPTH} levels"]) from exc


_SHOWN_STEPS = 6


def _too_deep(value: Any, limit: int) -> list[int | str] | None:
    """Where a container in ``value`` nests more than ``limit`` levels below it, if anywhere.

    Recursion is bounded by ``limit``: a cycle (a mapping given directly) is too deep too.
    """
    if limit <= 0:
        return []
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, item in items:
        if isinstance(item, Mapping | list | tuple):
            path = _too_deep(item, limit - 1)
            if path is not None:
                path.insert(0, key if isinstance(key, int | str) else repr(key))
                return path
    return None


def _nests_deeper(raw: Mapping[str, Any], limit: int) -> bool:
    """Whether a container in ``raw`` is more than ``limit`` levels deep (level by level)."""
    level: Iterable[Any] = [raw]
    for _ in range(limit):
        # By id: a mapping given directly may share containers, and must not blow up.
        level = {
            id(item): item
            for container in level
            for item in (container.values() if isinstance(container, Mapping) else container)
            if isinstance(item, Mapping | list | tuple)
        }.values()
        if not level:
            return False
    return True


def _check_depth(raw: Mapping[str, Any]) -> None:
    if not _nests_deeper(raw, MAX_DEPTH):
        return
    path = _too_deep(raw, MAX_DEPTH) or []
    if path is not None:
        # Name where the nesting starts: the last key, or the first few steps.
        keys = [n for n, step in enumerate(path) if isinstance(step, str)]
        shown = path[: keys[-1] + 1] if keys and keys[-1] < _SHOWN_STEPS else path[:_SHOWN_STEPS]
        where = _location(tuple(shown)) + ("..." if len(shown) < len(path) else "")
        raise DatafileError([f"{where}: nested deeper than {MAX_DEPTH} levels"])


def _check_conditions(datafile: Datafile) -> None:
    """Audiences' ``conditions`` strings: JSON nested at most ``MAX_DEPTH`` levels.

    Text that is not JSON is left to the decisions (such an audience never matches, as
    in Optimizely's SDK).
    """
    for audience in datafile.audiences:
        try:
            conditions = json.loads(audience.conditions)
        except ValueError:
            continue
        except RecursionError:
            path: list[int | str] | None = []
        else:
            path = (
                _too_deep(conditions, MAX_DEPTH) if isinstance(conditions, Mapping | list) else None
            )
        if path is not None:
            raise DatafileError(
                [f"audience {audience.id!r} conditions: nested deeper than {MAX_DEPTH} levels"]
            )


#: What a datafile may be given as: JSON text or bytes, a path, or parsed JSON.
DatafileSource = str | bytes | os.PathLike[str] | Mapping[str, Any]


def parse_datafile(source: DatafileSource) -> tuple[Datafile, str | None]:
    """Read and validate a datafile (without indexing it: see :func:`.load_datafile`).

    Args:
        source: The datafile as JSON text or bytes, a path to a JSON file (a
            ``pathlib.Path``, or a string that is not JSON text), or a mapping (already
            parsed JSON).

    Returns:
        The validated datafile, and its JSON text (``None`` for a mapping).

    Raises:
        DatafileError: The datafile is not JSON (a file is named), misses a required key,
            has a value of the wrong type, an unsupported ``version`` or an
            ``endOfRange`` out of ``0..10000``, nests deeper than ``MAX_DEPTH`` levels
            (an audience's ``conditions`` string too); or it is a URL. The message names
            every problem and where it is.
    """
    raw, text = _read(source)
    if not isinstance(raw, Mapping):
        raise DatafileError([f"(datafile): must be a JSON object (got {type(raw).__name__})"])
    _check_depth(raw)
    try:
        datafile = Datafile.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_url=False)]
        raise DatafileError(problems) from exc
    _check_conditions(datafile)
    return datafile, text
