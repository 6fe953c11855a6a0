"""StaticTokenCredential behaves like an azure-identity AsyncTokenCredential and hides its token."""

from __future__ import annotations

import time

import pytest
from azure.core.credentials import AccessToken, AccessTokenInfo

from store_async.credentials import StaticTokenCredential
from store_async.errors import ValidationError

SCOPE = "https://onestore.microsoft.com/.default"


async def test_returns_the_token_through_both_protocols() -> None:
    async with StaticTokenCredential("tok-123", expires_on=2_000_000_000) as credential:
        assert await credential.get_token(SCOPE) == AccessToken("tok-123", 2_000_000_000)
        info = await credential.get_token_info(SCOPE)
        assert isinstance(info, AccessTokenInfo)
        assert (info.token, info.expires_on, info.refresh_on) == ("tok-123", 2_000_000_000, None)


async def test_default_expiry_is_about_a_year_ahead() -> None:
    before = time.time()
    token = await StaticTokenCredential("t").get_token(SCOPE)
    assert before + 364 * 86400 < token.expires_on <= time.time() + 365 * 86400


def test_repr_hides_the_token() -> None:
    credential = StaticTokenCredential("super-secret-token", expires_on=5)
    assert "super-secret-token" not in repr(credential)
    assert repr(credential) == "StaticTokenCredential(token=<redacted>, expires_on=5)"


@pytest.mark.parametrize("token", ["", " padded ", None, 42])
def test_bad_tokens_are_refused(token: object) -> None:
    with pytest.raises(ValidationError, match="non-empty string"):
        StaticTokenCredential(token)  # type: ignore[arg-type]


def test_satisfies_azure_core_async_token_credential_protocol() -> None:
    # Checked statically by mypy (the assignment) and at run time (runtime_checkable protocol).
    from azure.core.credentials_async import AsyncTokenCredential

    credential: AsyncTokenCredential = StaticTokenCredential("t")
    assert isinstance(credential, AsyncTokenCredential)


@pytest.mark.parametrize("expires_on", ["soon", float("nan"), float("inf"), True, [1]])
def test_bad_expiry_is_a_validation_error(expires_on: object) -> None:
    with pytest.raises(ValidationError, match="expires_on"):
        StaticTokenCredential("t", expires_on=expires_on)  # type: ignore[arg-type]
