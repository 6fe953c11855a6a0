"""The request log: what the emulator received, request by request, and what it answered.

Enabled with ``StoreEmulator(record_requests=True)`` (it keeps every body, so load tests leave
it off). Tests read it to prove what the client sent: the same idempotency key on every
attempt, a byte-identical body on every attempt, the bearer token of each attempt, no request
at all for bad input::

    entry = emu.request_log[0]
    assert entry.path == "/v6.0/collections/consume"
    assert emu.request_log.sends(tracking_id) == 2
    assert len(emu.request_log.bodies(tracking_id)) == 1  # byte for byte the same
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from store_async.emulator.wire import canonical_guid

__all__ = ["LoggedRequest", "RequestLog"]


@dataclass(slots=True, eq=False)
class LoggedRequest:
    """One request as received, and its answer once given."""

    number: int
    """Arrival order over every endpoint, from 1."""
    endpoint: str
    method: str
    path: str
    headers: Mapping[str, str]
    """The request headers (case-insensitive look-ups)."""
    body: bytes
    key: str | None
    """The idempotency key it carried (GUIDs in canonical form), if its endpoint has one."""
    status: int | None = None
    """The answer's status; ``0`` when the connection was cut, ``None`` while unanswered."""
    response_headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def cv(self) -> str | None:
        """The ``MS-CV`` correlation vector the request carried, if any."""
        return self.headers.get("MS-CV")

    @property
    def bearer(self) -> str | None:
        """The access token of the ``Authorization: Bearer`` header, if any."""
        value = self.headers.get("Authorization", "")
        return value[7:] if value.startswith("Bearer ") else None

    def __repr__(self) -> str:  # bodies and headers may hold tokens and keys: not in reprs
        return (
            f"LoggedRequest(#{self.number} {self.method} {self.path} key={self.key} "
            f"status={self.status})"
        )


class RequestLog:
    """Every request an emulator received, in arrival order."""

    __slots__ = ("_bodies", "_entries", "_sends")

    def __init__(self) -> None:
        self._entries: list[LoggedRequest] = []
        self._sends: Counter[str] = Counter()
        self._bodies: dict[str, set[bytes]] = {}

    def add(self, entry: LoggedRequest) -> None:
        """Note one request (called by the emulator as it arrives)."""
        self._entries.append(entry)
        if entry.key is not None:
            self._sends[entry.key] += 1
            self._bodies.setdefault(entry.key, set()).add(entry.body)

    def of(self, endpoint: str) -> list[LoggedRequest]:
        """The requests to one endpoint (``consume``, ``query``...)."""
        return [entry for entry in self._entries if entry.endpoint == endpoint]

    def sends(self, key: str) -> int:
        """How many requests carried this idempotency key (any GUID spelling)."""
        return self._sends[canonical_guid(key) or key]

    def bodies(self, key: str) -> set[bytes]:
        """The distinct bodies sent with this idempotency key (a correct client: one)."""
        return set(self._bodies.get(canonical_guid(key) or key, ()))

    @property
    def sends_by_key(self) -> Counter[str]:
        """Requests per idempotency key (a copy)."""
        return Counter(self._sends)

    def idempotency_keys(self) -> set[str]:
        """Every idempotency key received."""
        return set(self._sends)

    def __getitem__(self, index: int) -> LoggedRequest:
        return self._entries[index]

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"RequestLog(requests={len(self._entries)}, keys={len(self._sends)})"
