"""Bounded tails of the code's output streams."""

from __future__ import annotations


class Tail:
    """The last ``limit`` bytes of a stream and the total byte count, in O(limit) memory."""

    __slots__ = ("_buf", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Account for ``chunk`` and keep the end of the stream."""
        self.total += len(chunk)
        if self.limit <= 0:
            return
        if len(chunk) >= self.limit:
            self._buf[:] = memoryview(chunk)[-self.limit :]
            return
        self._buf += chunk
        if len(self._buf) > 2 * self.limit:  # trim in batches: amortised O(1) per byte
            del self._buf[: -self.limit]

    @property
    def data(self) -> bytes:
        """The kept bytes: at most ``limit``, the end of the stream."""
        return bytes(self._buf[-self.limit :]) if self.limit > 0 else b""

    @property
    def truncated(self) -> bool:
        """True when the stream was longer than what is kept."""
        return self.total > min(len(self._buf), max(self.limit, 0))

    def text(self) -> str:
        """The kept bytes as text: invalid UTF-8 replaced, no half character at a cut start."""
        return decode_tail(self.data, cut=self.truncated)


def decode_tail(data: bytes, *, cut: bool) -> str:
    """Decode a tail; when its start was cut, drop the continuation bytes of a split character."""
    if cut:
        skip = 0
        while skip < 3 and skip < len(data) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    return data.decode("utf-8", errors="replace")
