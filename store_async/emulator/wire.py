"""Wire helpers of the emulator: error bodies, timestamps, GUIDs, lenient request fields.

The emulator speaks plain JSON dicts (orjson), never this library's models or codec: a bug in
the client's codec must not be mirrored on the server side, where the tests would miss it.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import orjson

__all__ = [
    "ApiError",
    "canonical_guid",
    "error_body",
    "lowered",
    "new_guid",
    "parse_wire_time",
    "wire_time",
]

# Top-level ``code`` per status, as in the one published ServiceError sample ("Unauthorized").
STATUS_CODES: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}

END_OF_TIME: Final = "9999-12-31T23:59:59.9999999+00:00"
"""The ``endDate`` of items that never expire, as the service sends it."""


class ApiError(Exception):
    """An error answer in the documented ServiceError shape.

    ``details`` names the offending request fields (documented for 400 ``InvalidParameter``).
    """

    def __init__(
        self,
        status: int,
        inner_code: str,
        message: str,
        *,
        details: tuple[str, ...] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.inner_code = inner_code
        self.message = message
        self.details = details
        self.headers = headers or {}

    @classmethod
    def invalid(cls, message: str, *fields: str) -> ApiError:
        """400 ``InvalidParameter`` naming the invalid body fields."""
        return cls(400, "InvalidParameter", message, details=fields)


def error_body(
    status: int, inner_code: str, message: str, *, source: str, details: tuple[str, ...] = ()
) -> bytes:
    """A ServiceError JSON body (``code``, ``data``, ``details``, ``innererror``, ``message``,
    ``source``)."""
    detail_list = [
        {"code": inner_code, "target": name, "message": f"{name} is invalid"} for name in details
    ]
    return orjson.dumps(
        {
            "code": STATUS_CODES.get(status, "Error"),
            "data": [],
            "details": detail_list,
            "innererror": {
                "code": inner_code,
                "data": [],
                "details": detail_list,
                "message": message,
            },
            "message": message,
            "source": source,
        }
    )


def wire_time(moment: datetime) -> str:
    """ISO 8601 with 7 fractional digits and an offset, as the service writes timestamps."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond:06d}0+00:00"


def parse_wire_time(value: Any) -> datetime | None:
    """Read a request timestamp: ISO 8601 (``Z``, offsets, 7 digits) or ``/Date(ms)/``.

    Returns ``None`` when it is not a timestamp.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.startswith("/Date(") and text.endswith(")/"):
        try:
            return datetime.fromtimestamp(int(text[6:-2]) / 1000, UTC)
        except (ValueError, OverflowError, OSError):
            return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def canonical_guid(value: Any) -> str | None:
    """Lowercase hyphenated form of a GUID in any common spelling, or ``None``."""
    if not isinstance(value, str) or not 32 <= len(value) <= 38:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def new_guid() -> str:
    """A random GUID (``os.urandom`` is twice as fast as ``uuid.uuid4()``)."""
    return str(uuid.UUID(bytes=os.urandom(16), version=4))


def lowered(value: Any) -> dict[str, Any] | None:
    """A JSON object with lowercase keys (the service binds fields case-insensitively, and
    the docs themselves send ``identitytype`` and ``Key``); ``None`` if not an object."""
    if not isinstance(value, dict):
        return None
    return {key.lower(): item for key, item in value.items() if isinstance(key, str)}


def now() -> datetime:
    """The current time, aware (UTC)."""
    return datetime.now(UTC)
