"""The attempt's claim in Redis: the first pod of an attempt runs its code, any later one does not.

Kubernetes before 1.26 (legacy Job tracking) starts a replacement pod the moment an attempt's pod
is marked for deletion (an eviction, a drain, `kubectl delete pod`), though the Job has
`backoffLimit: 0`; its container can start before the operator's deletion of the Job reaches it,
and run the attempt's code again beside the stopping one. From 1.26 a deleted pod counts as failed
and is not replaced. With Redis, the runner claims `{prefix}:claim` (SET NX) before it starts the
code; a pod that finds it taken stops there. The operator revokes an attempt's Redis user when it
ends the attempt, so a replacement started after that is refused at AUTH: it waits a while (the
user may not be granted yet, see UserRefused) and then does not run either.

Spoken over a plain socket (RESP): importing redis-py costs about 100 ms, and this is on the way to
the code's start. Redis that cannot answer never stops a run: the claim is then unknown, and the
code runs (the run's one Redis warning line), as heartbeats tolerate Redis being down.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

TIMEOUT = 0.25
"""Connect and read timeout in seconds: an unresponsive Redis delays the start by this much at
most (a Redis on the cluster's network answers in about a millisecond)."""
TTL = 86400
"""The claim outlives any attempt (timeoutSeconds is at most a day); the attempt's keys go with
its Redis user's revocation or expire."""


class ClaimError(Exception):
    """Redis did not answer the claim (unreachable, an error reply)."""


class UserRefused(ClaimError):
    """Redis refused the attempt's user: revoked (the operator ends an attempt by deleting its
    user), or not granted yet (Redis was down at the attempt's start, or restarted empty)."""


def claim(url: str, key: str, holder: str) -> bool:
    """Claim `key` for `holder`: True when this call set it, False when it was set already.

    Raises ClaimError when Redis could not say."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ClaimError(f"unsupported URL scheme {parts.scheme!r}")
    commands: list[list[str]] = []
    if parts.password is not None:
        user = unquote(parts.username) if parts.username else None
        commands.append(["AUTH", *([user] if user else []), unquote(parts.password)])
    database = parts.path.lstrip("/")
    if database not in ("", "0"):
        commands.append(["SELECT", database])
    commands.append(["SET", key, holder, "NX", "EX", str(TTL)])
    try:
        with _connect(parts.hostname or "localhost", parts.port or 6379, parts.scheme) as sock:
            sock.sendall(b"".join(_encode(command) for command in commands))
            replies = _Replies(sock)
            for command in commands[:-1]:
                reply = replies.next()
                if isinstance(reply, _Error):
                    error = UserRefused if command[0] == "AUTH" else ClaimError
                    raise error(f"{command[0]}: {reply}")
            reply = replies.next()
    except OSError as exc:
        raise ClaimError(str(exc) or type(exc).__name__) from None
    if isinstance(reply, _Error):
        raise ClaimError(f"SET: {reply}")
    return reply == "OK"


def _connect(host: str, port: int, scheme: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
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
    """Reads RESP replies: simple strings, errors, integers and bulk strings (nil as None)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def next(self) -> str | None:
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
