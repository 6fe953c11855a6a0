"""Entra ID access tokens: the v2 (and v1) token endpoint, and bearer checks.

The token endpoint answers the client-credentials grant that azure-identity's
``ClientSecretCredential`` sends (``POST /{tenant}/oauth2/v2.0/token``, form fields
``client_id``, ``client_secret``, ``grant_type``, ``scope``), and Microsoft's own Store sample's
v1 form (``POST /{tenant}/oauth2/token`` with ``resource``). Errors use Entra ID's shape
(``error``, ``error_description`` with an ``AADSTS`` code, ``error_codes``, ``trace_id``,
``correlation_id``, ``timestamp``); a wrong secret is 401 ``invalid_client``.

Tokens are RS256 JWTs with the claims a service reads (``aud``, ``iss``, ``appid``, ``tid``,
``exp``...), and the emulator also remembers each one, so checking a bearer token is a dict
look-up rather than a signature check on every request.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import jwt

from store_async.emulator.keys import signing_key
from store_async.emulator.wire import ApiError, new_guid

__all__ = ["STORE_AUDIENCE", "AccessTokens", "TokenRecord"]

STORE_AUDIENCE: Final = "https://onestore.microsoft.com"
"""The audience of the bearer token on collection, purchase and business calls."""

_TOKEN_INVALID: Final = "AuthenticationTokenInvalid"
_TICKET_REQUIRED: Final = "PartnerAadTicketRequired"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the emulator knows about an access token it issued."""

    client_id: str | None
    """The ``appid`` claim; ``None`` models a token without one (refused)."""
    audience: str
    expires_at: float


class AccessTokens:
    """Issues and checks the access tokens of one emulator."""

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        lifetime: float,
        dev_token: str,
    ) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self._client_secret = client_secret
        self.lifetime = lifetime
        self.dev_token = dev_token
        self.authority_url = "https://login.microsoftonline.com"
        self._records: dict[str, TokenRecord] = {
            dev_token: TokenRecord(
                client_id=client_id, audience=STORE_AUDIENCE, expires_at=math.inf
            )
        }
        self.issued = 0
        """Tokens issued by the token endpoint (a cold start of N callers should make 1)."""

    def mint(
        self,
        *,
        client_id: str | None,
        audience: str = STORE_AUDIENCE,
        lifetime: float | None = None,
    ) -> str:
        """Sign and remember a token (``client_id=None`` leaves out the ``appid`` claim)."""
        issued = time.time()
        expires_at = issued + (self.lifetime if lifetime is None else lifetime)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": int(issued),
            "nbf": int(issued),
            "exp": int(expires_at),
            "tid": self.tenant_id,
            "oid": new_guid(),
            "idtyp": "app",
            "uti": os.urandom(12).hex(),
        }
        if client_id is not None:
            claims["appid"] = client_id
        token = jwt.encode(claims, signing_key(), algorithm="RS256")
        self._records[token] = TokenRecord(
            client_id=client_id, audience=audience, expires_at=expires_at
        )
        return token

    def expire_all(self) -> int:
        """Expire every token issued so far (not the development token); returns how many."""
        count = 0
        for token, record in list(self._records.items()):
            if token != self.dev_token and record.expires_at > 0:
                self._records[token] = TokenRecord(record.client_id, record.audience, 0.0)
                count += 1
        return count

    def check(self, token: str | None) -> str:
        """The ``appid`` of a valid Store token, else ``ApiError`` 401 with the inner code."""
        if not token:
            raise ApiError(401, _TICKET_REQUIRED, "An access token is required.")
        record = self._records.get(token)
        if record is None:
            raise ApiError(401, _TOKEN_INVALID, "The access token is invalid.")
        if time.time() >= record.expires_at:
            raise ApiError(401, _TOKEN_INVALID, "The access token has expired.")
        if record.audience.rstrip("/") != STORE_AUDIENCE:
            raise ApiError(401, _TOKEN_INVALID, "The access token has the wrong audience.")
        if record.client_id is None:
            raise ApiError(401, _TOKEN_INVALID, "The access token has no appid claim.")
        return record.client_id

    def check_header(self, authorization: str | None) -> str:
        """:meth:`check` on an ``Authorization: Bearer <token>`` header value."""
        if not authorization:
            return self.check(None)
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise ApiError(401, _TICKET_REQUIRED, "A Bearer access token is required.")
        return self.check(token.strip() or None)

    def token_endpoint(
        self, tenant: str, form: dict[str, str], *, v1: bool
    ) -> tuple[int, dict[str, Any]]:
        """Answer a token request: ``(status, JSON body)`` in Entra ID's shapes."""
        if tenant.lower() != self.tenant_id.lower():
            return self._error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        grant_type = form.get("grant_type")
        if not grant_type:
            return self._error(400, "invalid_request", 900144, _missing("grant_type"))
        if grant_type != "client_credentials":
            return self._error(
                400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
            )
        client_id = form.get("client_id")
        if not client_id:
            return self._error(400, "invalid_request", 900144, _missing("client_id"))
        if client_id != self.client_id:
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory.",
            )
        secret = form.get("client_secret")
        if not secret:
            return self._error(
                401, "invalid_client", 7000216, "'client_assertion' or 'client_secret' is required."
            )
        if secret != self._client_secret:
            return self._error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                f"the client secret value, not the client secret ID, for a secret added to app "
                f"'{client_id}'.",
            )
        name = "resource" if v1 else "scope"
        requested = form.get(name)
        if not requested:
            return self._error(400, "invalid_request", 900144, _missing(name))
        audience = requested if v1 else _audience_of(requested)
        if not audience:
            return self._error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {requested} is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource identifier.",
            )
        token = self.mint(client_id=client_id, audience=audience)
        self.issued += 1
        expires_in = int(self.lifetime)
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": token,
        }
        if v1:
            body["expires_on"] = str(int(time.time()) + expires_in)
            body["resource"] = audience
        return 200, body

    def _error(self, status: int, error: str, code: int, text: str) -> tuple[int, dict[str, Any]]:
        trace_id, correlation_id = new_guid(), new_guid()
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return status, {
            "error": error,
            "error_description": f"AADSTS{code}: {text} Trace ID: {trace_id} "
            f"Correlation ID: {correlation_id} Timestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": f"{self.authority_url}/error?code={code}",
        }


def _missing(name: str) -> str:
    return f"The request body must contain the following parameter: '{name}'."


def _audience_of(scope: str | None) -> str | None:
    """``https://onestore.microsoft.com/.default`` -> ``https://onestore.microsoft.com``."""
    if not scope:
        return None
    first = scope.split()[0] if scope.split() else ""
    return first.removesuffix("/.default") if first.endswith("/.default") else None
