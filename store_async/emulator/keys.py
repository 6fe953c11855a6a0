"""Store ID keys ("b2b keys") minted and checked by the emulator: RS256 JWTs.

The keys carry the documented claims (docs/store-api.md section 2): ``iat``, ``iss`` = ``aud``,
``aud`` per kind, ``exp``, ``nbf`` and the ``.../key/clientId``, ``.../key/payload``,
``.../key/userId`` and ``.../key/refreshUri`` claims. ``payload`` is the emulator's own user id
(base64url JSON; the real service encrypts it). The header carries ``x5t``, unique to one
emulator instance, so a key minted by another emulator (or forged) is refused even though
all emulators in a process share one RSA key (generating RSA keys is slow).
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["AUDIENCES", "KeyClaims", "KeyRejected", "StoreIdKeys", "looks_like_jwt", "signing_key"]

KeyKind = Literal["collections", "purchase"]

AUDIENCES: Final[dict[str, str]] = {
    "collections": "https://collections.mp.microsoft.com/v6.0/keys",
    "purchase": "https://purchase.mp.microsoft.com/v6.0/keys",
}
_KIND_BY_AUDIENCE: Final = {audience: kind for kind, audience in AUDIENCES.items()}

CLAIM_PREFIX: Final = "http://schemas.microsoft.com/marketplace/2015/08/claims/key/"
CLIENT_ID_CLAIM: Final = CLAIM_PREFIX + "clientId"
PAYLOAD_CLAIM: Final = CLAIM_PREFIX + "payload"
USER_ID_CLAIM: Final = CLAIM_PREFIX + "userId"
REFRESH_URI_CLAIM: Final = CLAIM_PREFIX + "refreshUri"

DEFAULT_KEY_LIFETIME: Final = 30 * 24 * 3600.0
"""30 days, the lifetime in Microsoft's current documentation."""

_signing_key: rsa.RSAPrivateKey | None = None
_signing_key_lock = threading.Lock()


def signing_key() -> rsa.RSAPrivateKey:
    """The process-wide RSA key of emulators (made on first use: ~50 ms)."""
    global _signing_key
    with _signing_key_lock:
        if _signing_key is None:
            _signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _signing_key


def looks_like_jwt(value: str) -> bool:
    """True for three dot-separated parts whose first is a base64url JSON object (a JWT
    header). ``"john.doe.smith"`` is not one; it stays an opaque test user id."""
    parts = value.split(".")
    if len(parts) != 3 or not parts[0]:
        return False
    try:
        header = orjson.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and "alg" in header


class KeyRejected(Exception):
    """The key was refused; ``reason`` says why (never the key itself)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class KeyClaims:
    """What the emulator learned from a verified key."""

    user_id: str
    """The emulator's user (from ``payload``): whose collection the key opens."""
    publisher_user_id: str
    """The ``userId`` claim (the ``publisherUserId`` given at creation)."""
    client_id: str
    kind: KeyKind
    issued_at: float
    expires_at: float
    not_before: float


class StoreIdKeys:
    """Mints, verifies, renews and revokes the Store ID keys of one emulator."""

    def __init__(self, *, lifetime: float = DEFAULT_KEY_LIFETIME) -> None:
        self.lifetime = lifetime
        self.refresh_base_url = "https://collections.mp.microsoft.com"
        self._thumbprint = base64.urlsafe_b64encode(os.urandom(20)).rstrip(b"=").decode()
        self._verified: dict[str, KeyClaims] = {}
        self._revoked: set[str] = set()

    def mint(
        self,
        user_id: str,
        kind: KeyKind,
        *,
        client_id: str,
        publisher_user_id: str | None = None,
        issued_at: float | None = None,
        lifetime: float | None = None,
    ) -> str:
        """A new signed key for ``user_id``; ``issued_at`` in the past makes expired keys."""
        if kind not in AUDIENCES:
            raise ValueError(f"kind must be 'collections' or 'purchase', got {kind!r}")
        if not user_id:
            raise ValueError("user_id must be a non-empty string")
        issued = time.time() if issued_at is None else issued_at
        audience = AUDIENCES[kind]
        payload = base64.urlsafe_b64encode(orjson.dumps({"uid": user_id, "n": os.urandom(6).hex()}))
        claims: dict[str, Any] = {
            "iat": int(issued),
            "iss": audience,
            "aud": audience,
            "exp": int(issued + (self.lifetime if lifetime is None else lifetime)),
            "nbf": int(issued) - 3601,  # as in the documentation's (older, consistent) sample
            CLIENT_ID_CLAIM: client_id,
            PAYLOAD_CLAIM: payload.decode(),
            USER_ID_CLAIM: user_id if publisher_user_id is None else publisher_user_id,
            REFRESH_URI_CLAIM: f"{self.refresh_base_url}/v6.0/b2b/keys/renew",
        }
        return jwt.encode(
            claims, signing_key(), algorithm="RS256", headers={"x5t": self._thumbprint}
        )

    def verify(
        self, value: str, *, now: float | None = None, for_renewal: bool = False
    ) -> KeyClaims:
        """The claims of a key this emulator minted, still valid; else :class:`KeyRejected`.

        ``for_renewal`` still refuses expired keys: current documentation says a key is
        renewable only before it expires.
        """
        claims = self._verified.get(value)
        if claims is None:
            claims = self._check_signature(value)
            if len(self._verified) > 100_000:  # bounded: a long load test mints many keys
                self._verified.clear()
            self._verified[value] = claims
        if value in self._revoked:
            raise KeyRejected("the key was revoked")
        moment = time.time() if now is None else now
        if moment >= claims.expires_at:
            raise KeyRejected("the key expired" + (" and cannot be renewed" if for_renewal else ""))
        if moment < claims.not_before:
            raise KeyRejected("the key is not valid yet")
        return claims

    def renew(self, value: str) -> str:
        """A fresh key for the same user, client and kind (the old one stays valid)."""
        claims = self.verify(value, for_renewal=True)
        return self.mint(
            claims.user_id,
            claims.kind,
            client_id=claims.client_id,
            publisher_user_id=claims.publisher_user_id,
        )

    def revoke(self, value: str) -> None:
        """Refuse this key from now on (as the service may revoke keys early)."""
        self._revoked.add(value)

    def _check_signature(self, value: str) -> KeyClaims:
        try:
            header = jwt.get_unverified_header(value)
            if header.get("x5t") != self._thumbprint:
                raise KeyRejected("the key was not issued by this emulator")
            decoded = jwt.decode(
                value,
                signing_key().public_key(),
                algorithms=["RS256"],
                options={
                    "verify_exp": False,  # expiry is checked on every use, not once
                    "verify_nbf": False,
                    "verify_aud": False,
                    "verify_iat": False,
                    "require": ["iat", "exp", "nbf", "aud"],
                },
            )
        except jwt.PyJWTError as error:
            raise KeyRejected(
                f"the key is not a valid signed JWT ({type(error).__name__})"
            ) from None
        kind = _KIND_BY_AUDIENCE.get(decoded.get("aud"))  # type: ignore[arg-type]
        client_id = decoded.get(CLIENT_ID_CLAIM)
        user_id = _user_from_payload(decoded.get(PAYLOAD_CLAIM))
        publisher_user_id = decoded.get(USER_ID_CLAIM)
        if kind is None or not isinstance(client_id, str) or user_id is None:
            raise KeyRejected("the key lacks the documented claims")
        return KeyClaims(
            user_id=user_id,
            publisher_user_id=publisher_user_id if isinstance(publisher_user_id, str) else user_id,
            client_id=client_id,
            kind=kind,  # type: ignore[arg-type]
            issued_at=float(decoded["iat"]),
            expires_at=float(decoded["exp"]),
            not_before=float(decoded["nbf"]),
        )


def _user_from_payload(payload: Any) -> str | None:
    if not isinstance(payload, str):
        return None
    try:
        document = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None
    user_id = document.get("uid") if isinstance(document, dict) else None
    return user_id if isinstance(user_id, str) and user_id else None
