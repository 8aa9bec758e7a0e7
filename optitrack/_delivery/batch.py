"""What a batch is: the context its items share, and the record of a batch on its way.

Owns :class:`BatchContext` (an endpoint and a body's envelope: what items must share to
travel in one request) and :class:`Part` (a batch, or a piece of one after a split, with
its idempotency key, its body once built and its attempts). It knows nothing of the
format of an item, nor of the queue, the ledger or HTTP: an item is opaque bytes, and a
body is ``prefix + b",".join(items) + suffix``.
"""

from __future__ import annotations

from .._uuid import new_uuid

__all__ = ["BatchContext", "Part"]


class BatchContext:
    """What items must share to travel in one request: an endpoint and a body's envelope.

    A body is ``prefix``, the items joined by commas, then ``suffix`` (a JSON array in an
    object, say). Two contexts are equal when endpoint, prefix and suffix are: the queue
    never puts items of unequal contexts in one batch.

    Args:
        endpoint: Where the batch is sent (an http(s) URL).
        prefix: The body's opening bytes, before the first item.
        suffix: The body's closing bytes, after the last item.
    """

    __slots__ = ("_key", "endpoint", "overhead", "prefix", "suffix")

    def __init__(self, endpoint: str, prefix: bytes, suffix: bytes) -> None:
        self.endpoint = endpoint
        self.prefix = prefix
        self.suffix = suffix
        #: The bytes of a body that are not items: ``len(prefix) + len(suffix)``.
        self.overhead = len(prefix) + len(suffix)
        self._key = (endpoint, prefix, suffix)

    def body(self, items: list[bytes]) -> bytes:
        """Assemble a request body.

        Args:
            items: The serialized items, in order.

        Returns:
            The complete request body.
        """
        return b"".join((self.prefix, b",".join(items), self.suffix))

    def body_size(self, items_bytes: int, count: int) -> int:
        """The size of a body holding ``count`` items totalling ``items_bytes``."""
        return self.overhead + items_bytes + max(count - 1, 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchContext) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return (
            f"BatchContext(endpoint={self.endpoint!r}, prefix={self.prefix!r}, "
            f"suffix={self.suffix!r})"
        )


class Part:
    """A batch, or a piece of one after a split, on its way to the endpoint.

    Its items hold the sequence numbers ``first_seq`` to ``first_seq + len(items) - 1``.
    Its idempotency key and, once built, its body stay the same for every attempt.

    Args:
        ctx: The context its items share.
        items: The serialized items, in order.
        first_seq: The sequence number of the first item.
        splits: Splits left to the whole batch, shared by its pieces (the batch's own
            count when omitted).
    """

    __slots__ = (
        "attempts",
        "body",
        "charged",
        "ctx",
        "done",
        "first_seq",
        "items",
        "key",
        "splits",
        "started",
    )

    def __init__(
        self,
        ctx: BatchContext,
        items: list[bytes],
        first_seq: int,
        splits: list[int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.items = items
        self.first_seq = first_seq
        # Splits left to the whole batch, shared by its pieces: isolating a few bad
        # items takes about 2 log2(n) requests; an endpoint that refuses everything
        # must not cost 2n.
        self.splits = splits if splits is not None else [3 * len(items).bit_length() + 2]
        self.key = new_uuid()
        self.body: bytes | None = None
        self.attempts = 0  # every attempt, for the attempt header
        self.charged = 0  # failed attempts that count against RetryPolicy.attempts
        self.started: float | None = None
        self.done = False  # accounted for, or replaced by its halves

    def split(self, *, charge: bool = True) -> tuple[Part, Part]:
        """Two halves, in order, that share what is left of the batch's splits.

        Args:
            charge: Whether this split counts against the batch's splits (a split for
                size, which ends once each piece fits, does not).
        """
        half = len(self.items) // 2
        if charge:
            self.splits[0] -= 1
        return (
            Part(self.ctx, self.items[:half], self.first_seq, self.splits),
            Part(self.ctx, self.items[half:], self.first_seq + half, self.splits),
        )
