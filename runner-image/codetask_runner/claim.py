"""The attempt's claim in Redis: the first pod of an attempt runs its code, any later one does not.

Kubernetes before 1.26 (legacy Job tracking) starts a replacement pod the moment an attempt's pod
is marked for deletion (an eviction, a drain, `kubectl delete pod`), though the Job has
`backoffLimit: 0`; its container can start before the operator's deletion of the Job reaches it,
and run the attempt's code again beside the stopping one. From 1.26 a deleted pod counts as failed
and is not replaced. With Redis, the runner claims `{prefix}:claim` (SET NX) before it starts the
code; a pod that finds it taken stops there. The operator revokes an attempt's Redis user when it
ends the attempt, so a replacement started after that is refused at AUTH: it waits a while (the
user may not be granted yet, see UserRefused) and then does not run either.

Spoken over a plain socket (RESP, ``Connection``; warm.py's wait uses it too): importing redis-py
costs about 100 ms, and this is on the way to the code's start. Redis that cannot answer never
stops a run: the claim is then unknown, and the code runs (the run's one Redis warning line), as
heartbeats tolerate Redis being down.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

TYPE_CHECKING = False  # typing costs ~10 ms at start-up; mypy still reads the block below
if TYPE_CHECKING:
    from types import TracebackType
    from typing import TypeAlias

    Reply: TypeAlias = "str | list[Reply] | None"
    """A RESP reply: a simple or bulk string (an error as ``_Error``), nil, an array."""

TIMEOUT = 0.25
"""Connect and read timeout in seconds: an unresponsive Redis delays the start by this much at
most (a Redis on the cluster's network answers in about a millisecond)."""
TTL = 86400
"""The claim outlives any attempt (timeoutSeconds is at most a day); the attempt's keys go with
its Redis user's revocation or expire."""


class ClaimError(Exception):
    """Redis did not answer (unreachable, an error reply)."""


class UserRefused(ClaimError):
    """Redis refused the URL's user: an attempt's is revoked (the operator ends an attempt by
    deleting its user), or not granted yet (Redis was down at the attempt's start, or restarted
    empty)."""


def claim(url: str, key: str, holder: str) -> bool:
    """Claim `key` for `holder`: True when this call set it, False when it was set already.

    Raises ClaimError when Redis could not say."""
    with Connection(url, TIMEOUT) as redis:
        return redis.call(["SET", key, holder, "NX", "EX", str(TTL)]) == "OK"


class Connection:
    """One connection to the Redis of a ``redis://`` or ``rediss://`` URL, as the URL's user and
    on its database. Raises ClaimError when Redis does not answer (UserRefused: AUTH refused)."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ClaimError(f"unsupported URL scheme {parts.scheme!r}")
        self._setup: list[list[str]] = []
        """AUTH and SELECT, sent with the first command (one round trip) or by ``authenticate``."""
        if parts.password is not None:
            user = unquote(parts.username) if parts.username else None
            self._setup.append(["AUTH", *([user] if user else []), unquote(parts.password)])
        database = parts.path.lstrip("/")
        if database not in ("", "0"):
            self._setup.append(["SELECT", database])
        self._timeout = timeout
        try:
            self._sock = _connect(
                parts.hostname or "localhost", parts.port or 6379, parts.scheme, timeout
            )
        except OSError as exc:
            raise ClaimError(str(exc) or type(exc).__name__) from None
        self._replies = _Replies(self._sock)

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sock.close()

    def authenticate(self) -> None:
        """Send AUTH and SELECT now, on their own: a command sent with a refused AUTH would run
        as Redis's default user."""
        self._exchange([])

    def call(self, command: list[str], wait: float = 0.0) -> Reply:
        """``command``'s reply; ``wait``: how long Redis may take beyond the timeout (a blocking
        command's own timeout)."""
        reply = self._exchange([command], wait)[-1]
        if isinstance(reply, _Error):
            raise ClaimError(f"{command[0]}: {reply}")
        return reply

    def _exchange(self, commands: list[list[str]], wait: float = 0.0) -> list[Reply]:
        setup, self._setup = self._setup, []
        sent = setup + commands
        if not sent:
            return []
        try:
            self._sock.settimeout(self._timeout + wait)
            self._sock.sendall(b"".join(_encode(command) for command in sent))
            for command in setup:
                reply = self._replies.next()
                if isinstance(reply, _Error):
                    error = UserRefused if command[0] == "AUTH" else ClaimError
                    raise error(f"{command[0]}: {reply}")
            return [self._replies.next() for _ in commands]
        except OSError as exc:
            raise ClaimError(str(exc) or type(exc).__name__) from None


def _connect(host: str, port: int, scheme: str, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    if scheme == "rediss":
        import ssl

        return ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    return sock


def _encode(command: list[str]) -> bytes:
    out = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Error(str):
    """An error reply."""


class _Replies:
    """Reads RESP replies: simple strings, errors, integers, bulk strings and arrays (nil as
    None)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def next(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:].decode(errors="replace")
        if kind == b"+" or kind == b":":
            return rest
        if kind == b"-":
            return _Error(rest)
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            data = self._exactly(length + 2)
            return data[:-2].decode(errors="replace")
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.next() for _ in range(count)]
        raise ClaimError(f"unexpected reply {line[:40]!r}")

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _fill(self) -> None:
        chunk = self._sock.recv(4096)
        if not chunk:
            raise ClaimError("connection closed")
        self._buffer += chunk
