"""Reading conversions from JSON Lines and CSV files, for ``optitrack send``.

A file is read in chunks of whole lines (about 1 MiB each, in a worker thread, so that a
slow pipe never stalls delivery), and each line becomes a :class:`Record` or a
:class:`BadLine` (its number and what is wrong with it). Only the shape of a line is
checked here; what the datafile accepts (event keys, attribute and tag values) is for
the client to say.

Owns: the two file formats and typing ``k=v`` values. Must not touch: tracking.
"""

from __future__ import annotations

import csv
import json
import json.scanner
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Final

import anyio.to_thread

__all__ = [
    "FORMATS",
    "BadLine",
    "Record",
    "csv_parser",
    "jsonl_parser",
    "line_chunks",
    "typed",
]

#: The formats ``optitrack send`` reads, by name.
FORMATS: Final = ("jsonl", "csv")
#: The keys a JSON Lines record may have.
_KEYS: Final = frozenset({"event_key", "user_id", "attributes", "tags", "timestamp"})
_CHUNK_BYTES: Final = 1 << 20
#: First characters of a value that may be JSON (a number, true, false, null, a string,
#: an array or an object): anything else is a string without trying.
_JSON_START: Final = frozenset('-0123456789tfn"[{')

#: A conversion read from a line: ``(event_key, user_id, attributes, tags, timestamp)``.
Record = tuple[Any, Any, Any, Any, Any]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a conversion.

    Attributes:
        reason: A short machine-readable reason (``not_json``, ``bad_record``...).
        message: What is wrong, for people.
    """

    reason: str
    message: str


def typed(text: str) -> Any:
    """A value given as text: its JSON value when it parses as JSON, else the text itself.

    ``"42"`` is 42, ``"4.5"`` is 4.5, ``"true"`` is True, ``'"42"'`` is the string
    ``"42"``, and ``"pro"`` (not JSON) is ``"pro"``.
    """
    if text and text[0] in _JSON_START:
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


async def line_chunks(stream: IO[bytes]) -> AsyncIterator[list[bytes]]:
    """The stream's lines, a list of about 1 MiB of them at a time, until its end."""
    while True:
        lines = await anyio.to_thread.run_sync(stream.readlines, _CHUNK_BYTES)
        if not lines:
            return
        yield lines


def _decode(line: bytes) -> str | BadLine:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadLine("not_utf8", f"not UTF-8: {exc}")


def jsonl_parser() -> Callable[[bytes], Record | BadLine | None]:
    """A parser of JSON Lines: one line in, a record, a bad line, or ``None`` (blank)."""
    # Decoding the bytes first, then the decoder itself: json.loads of bytes spends a third
    # of its time guessing their encoding. utf-8-sig: a byte order mark is not an error.
    decoder = json.JSONDecoder()
    decode = decoder.decode
    # The decoder's own scanner, for the common line: an object from the first character
    # to the newline. Anything else (whitespace around it, a byte order mark, extra data,
    # invalid JSON) goes through decode(), which reads it the same or says what is wrong.
    scan = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]  # typeshed: a class
    keys = _KEYS

    def parse(line: bytes) -> Record | BadLine | None:
        obj = None
        if line[:1] == b"{":
            try:
                text = line.decode()
                obj, end = scan(text, 0)
            except (ValueError, StopIteration):
                obj = None
            else:
                if end != len(text) and (end != len(text) - 1 or text[end] != "\n"):
                    obj = None
        if obj is None:
            try:
                obj = decode(line.decode("utf-8-sig"))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                if not line.strip():
                    return None
                return BadLine("not_json", f"not valid JSON: {exc}")
        if type(obj) is not dict:
            return BadLine("bad_record", f"must be a JSON object, not {type(obj).__name__}")
        if len(obj) > 5 or not obj.keys() <= keys:
            unknown = sorted(set(obj) - keys)
            return BadLine("bad_record", f"unknown keys {unknown} (allowed: {sorted(keys)})")
        try:
            return (
                obj["event_key"],
                obj["user_id"],
                obj.get("attributes"),
                obj.get("tags"),
                obj.get("timestamp"),
            )
        except KeyError as exc:
            return BadLine("bad_record", f"{exc.args[0]} is required")

    return parse


def _timestamp(text: str) -> Any:
    # A timestamp cell is an integer (ms since the epoch); anything else goes to the
    # client as given, which refuses it with a reason.
    try:
        return int(text)
    except ValueError:
        return text


def csv_parser(header: bytes) -> Callable[[bytes], Record | BadLine | None]:
    """A parser of CSV lines under ``header``: one line in, a record, a bad line or ``None``.

    Raises:
        ValueError: The header is not UTF-8, lacks ``event_key`` or ``user_id``, repeats a
            column or has a column that is none of those, ``timestamp``, ``attr:NAME`` or
            ``tag:NAME``.
    """
    try:
        names = next(csv.reader([header.decode("utf-8-sig")]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"the CSV header cannot be read: {exc}") from exc
    if len(set(names)) != len(names):
        raise ValueError(f"the CSV header repeats a column: {names}")
    for required in ("event_key", "user_id"):
        if required not in names:
            raise ValueError(f"the CSV header needs an {required!r} column (it has {names})")
    attrs: list[tuple[int, str]] = []
    tags: list[tuple[int, str]] = []
    for i, name in enumerate(names):
        if name.startswith("attr:") and len(name) > 5:
            attrs.append((i, name[5:]))
        elif name.startswith("tag:") and len(name) > 4:
            tags.append((i, name[4:]))
        elif name not in ("event_key", "user_id", "timestamp"):
            raise ValueError(
                f"unknown CSV column {name!r}: the columns are event_key, user_id, "
                "timestamp (optional), attr:NAME and tag:NAME"
            )
    width = len(names)
    i_event, i_user = names.index("event_key"), names.index("user_id")
    i_time = names.index("timestamp") if "timestamp" in names else None
    reader = csv.reader

    def values(row: list[str], columns: Iterable[tuple[int, str]]) -> dict[str, Any] | None:
        out = {name: typed(row[i]) for i, name in columns if row[i] != ""}
        return out or None

    def parse(line: bytes) -> Record | BadLine | None:
        text = _decode(line)
        if isinstance(text, BadLine):
            return text
        if not text.strip():
            return None
        try:
            row = next(reader((text,), strict=True))
        except csv.Error as exc:
            return BadLine("bad_csv", f"not a CSV row: {exc}")
        if len(row) != width:
            return BadLine("bad_csv", f"has {len(row)} values, the header {width} columns")
        cell = row[i_time] if i_time is not None else ""
        return (
            row[i_event],
            row[i_user],
            values(row, attrs),
            values(row, tags),
            _timestamp(cell) if cell else None,
        )

    return parse
