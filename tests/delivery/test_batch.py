"""Batches (optitrack/_delivery/batch.py): a generic context frames a body; parts split."""

from __future__ import annotations

from optitrack._delivery import BatchContext, Part

URL = "http://collector.test/v1/items"


def test_a_body_is_the_prefix_the_items_joined_by_commas_and_the_suffix() -> None:
    ctx = BatchContext(URL, b'{"items":[', b"]}")
    assert ctx.body([b"1", b"2", b"3"]) == b'{"items":[1,2,3]}'
    assert ctx.body([]) == b'{"items":[]}'
    assert ctx.body_size(3, 3) == len(ctx.body([b"1", b"2", b"3"]))
    assert ctx.body_size(0, 0) == len(ctx.body([]))
    assert ctx.overhead == len(b'{"items":[') + len(b"]}")


def test_contexts_are_equal_by_endpoint_prefix_and_suffix() -> None:
    ctx = BatchContext(URL, b"[", b"]")
    assert ctx == BatchContext(URL, b"[", b"]")
    assert hash(ctx) == hash(BatchContext(URL, b"[", b"]"))
    assert ctx != BatchContext("http://other.test/v1/items", b"[", b"]")
    assert ctx != BatchContext(URL, b"[[", b"]")
    assert ctx != BatchContext(URL, b"[", b"]]")
    assert ctx != (URL, b"[", b"]")


def test_the_halves_of_a_part_keep_order_and_share_the_split_budget() -> None:
    part = Part(BatchContext(URL, b"[", b"]"), [b"1", b"2", b"3"], first_seq=7)
    budget = part.splits[0]
    left, right = part.split()
    assert (left.items, left.first_seq) == ([b"1"], 7)
    assert (right.items, right.first_seq) == ([b"2", b"3"], 8)
    assert left.splits is right.splits is part.splits
    assert part.splits[0] == budget - 1
    assert len({part.key, left.key, right.key}) == 3  # a body of its own, a key of its own
