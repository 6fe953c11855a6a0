"""``StaticTokenCredential``: a fixed bearer token, for emulators, tests and load tools."""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from store_async.errors import ValidationError

__all__ = ["StaticTokenCredential"]

_ONE_YEAR = 365 * 24 * 3600


class StaticTokenCredential:
    """An azure-identity style ``AsyncTokenCredential`` that always returns the same token.

    ``expires_on`` (epoch seconds) defaults to one year from creation. The token never appears
    in ``repr``.
    """

    __slots__ = ("_expires_on", "_token")

    def __init__(self, token: str, *, expires_on: float | None = None) -> None:
        if not isinstance(token, str) or not token or token != token.strip():
            raise ValidationError(
                "the static token must be a non-empty string without surrounding spaces"
            )
        if expires_on is not None and (
            isinstance(expires_on, bool)
            or not isinstance(expires_on, int | float)
            or not math.isfinite(expires_on)
        ):
            raise ValidationError("expires_on must be a finite number of epoch seconds")
        self._token = token
        self._expires_on = int(time.time() + _ONE_YEAR if expires_on is None else expires_on)

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, self._expires_on)

    async def get_token_info(
        self, *scopes: str, options: TokenRequestOptions | None = None
    ) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, self._expires_on)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> StaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"StaticTokenCredential(token=<redacted>, expires_on={self._expires_on})"
