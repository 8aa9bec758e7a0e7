"""Property-based tests of the two edges that take anything: ``track`` and the datafile.

``track``: arbitrary user ids, attributes and tags never raise; whatever is accepted is
JSON the stand-in accepts (it validates every body), and the ledger balances. The
datafile: generated and mutated datafiles load or raise :class:`~optitrack.DatafileError`,
never anything else. Each runs a fixed, derandomized budget of examples (a few seconds).
"""

from __future__ import annotations

import copy
import json
import math
import random
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import optitrack
from optitrack import DatafileError, Reason, load_datafile
from optitrack.testing import EventsAPI
from tests.conftest import asgi_client, check_ledger, load_fixture
from tests.decisions._random_datafiles import _Builder

_PROFILE = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- track -----------------------------------------------------------------------------


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(st.characters(exclude_categories=()) | surrogates, max_size=6) | st.sampled_from(
    ["", "plan", "revenue", "value", "$opt_bot", "line\nbreak", "\ud800", "😀"]
)
numbers = st.integers(min_value=-(2**80), max_value=2**80) | st.floats()
others = st.sampled_from([_Opaque(), b"bytes", {1, 2}, (1, "t"), object, 1j])
scalars = st.none() | st.booleans() | numbers | texts | others
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts | numbers, inner, max_size=3),
    max_leaves=10,
)
mappings = st.dictionaries(texts | numbers | st.none(), values, max_size=4)
# Calls that may well be accepted (a known event, a text user id, JSON-ish values), and
# calls with anything anywhere.
likely_calls = st.tuples(
    st.sampled_from(["purchase", "signup"]),
    st.text(max_size=6),
    st.none()
    | st.dictionaries(st.sampled_from(["plan", "age", "app_version", "x"]) | texts, scalars),
    st.none()
    | st.dictionaries(
        st.sampled_from(["revenue", "value", "category"]) | st.text(max_size=4),
        st.recursive(
            st.none() | st.booleans() | numbers | st.text(max_size=4),
            lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner),
            max_leaves=5,
        ),
        max_size=3,
    ),
)
wild_calls = st.tuples(
    st.sampled_from(["purchase", "signup", "unknown"]) | texts,
    texts | scalars,
    st.none() | mappings | values,
    st.none() | mappings | values,
)
calls = likely_calls | wild_calls
REFUSALS = {Reason.INVALID_INPUT, Reason.INVALID_TAGS, Reason.UNKNOWN_EVENT}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@_PROFILE
@given(batch=st.lists(calls, min_size=1, max_size=8))
def test_track_takes_anything_and_sends_only_what_the_api_accepts(
    backend: str, batch: list[tuple[Any, Any, Any, Any]]
) -> None:
    datafile = load_fixture("datafile_example.json")
    api = EventsAPI()

    async def main() -> optitrack.Statistics:
        async with asgi_client(api, datafile) as client:
            for event_key, user_id, attributes, tags in batch:
                result = await client.track(event_key, user_id, attributes, tags)
                assert result.accepted or result.reason in REFUSALS, result
            with anyio.fail_after(10):
                assert (await client.flush()).complete
            return client.statistics()

    stats = anyio.run(main, backend=backend)
    event(f"accepted {min(stats.accepted, 2)}+")
    check_ledger(stats)
    assert stats.dropped_total == 0, stats  # the stand-in refused nothing
    assert stats.delivered == stats.accepted == api.event_count
    assert stats.accepted + sum(stats.refused.values()) == len(batch)


# -- the datafile ----------------------------------------------------------------------

SWAPS: list[Any] = [
    None, True, 0, -1, 10_001, 2**70, 1.5, math.nan, math.inf, "", "x", "\ud800",
    [], {}, [None], {"id": 1}, "[", '{"a":', "[" * 200 + "]" * 200,
]  # fmt: skip


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) of a JSON document, in a fixed order."""
    slots: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            slots.append((node, key))
            if isinstance(node[key], dict | list):
                stack.append(node[key])
    return slots


def _nested(levels: int, inner: Any) -> Any:
    for _ in range(levels):
        inner = [inner]
    return inner


@st.composite
def datafiles(draw: st.DrawFn) -> dict[str, Any]:
    """A generated datafile (or the example one), then a few random mutations."""
    seed = draw(st.integers(0, 10_000))
    doc: dict[str, Any] = (
        load_fixture("datafile_example.json")
        if seed % 4 == 0
        else _Builder(random.Random(seed), quirky=seed % 3 == 0).build()
    )
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(0, 6))):
        slots = _slots(doc)
        if not slots:
            break
        node, key = slots[draw(st.integers(0, len(slots) - 1))]
        action = draw(st.sampled_from(["delete", "swap", "nest", "garbage"]))
        if action == "delete":
            del node[key]
        elif action == "swap":
            node[key] = draw(st.sampled_from(SWAPS))
        elif action == "nest":
            node[key] = _nested(draw(st.sampled_from([1, 5, 99, 150, 3000])), node[key])
        else:
            node[key] = draw(st.text(max_size=20) | st.sampled_from(["[[[[", '{"x":[}', "\x00"]))
    return doc


def _load(source: Any) -> None:
    try:
        config = load_datafile(source)
    except DatafileError:
        return
    optitrack.Client(config)  # indexes and compiles it: what a client does with it


@_PROFILE
@given(doc=datafiles())
def test_a_mutated_datafile_loads_or_raises_datafile_error(doc: dict[str, Any]) -> None:
    _load(doc)
    try:
        text = json.dumps(doc)
    except (RecursionError, ValueError):
        return  # too deep for the json module to write: the mapping was checked
    _load(text)
    _load(text.encode())


@_PROFILE
@given(text=st.text(max_size=200) | st.binary(max_size=200))
def test_garbage_text_is_a_datafile_error(text: str | bytes) -> None:
    if isinstance(text, str) and not text.lstrip().startswith(("{", "[")):
        text = "{" + text  # text that is not JSON would name a file
    _load(text)
