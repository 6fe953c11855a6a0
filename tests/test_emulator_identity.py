"""The Entra ID token endpoint: azure-identity's real ClientSecretCredential over TLS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential

from store_async import StoreClient
from store_async.emulator import DEFAULT_CLIENT_ID, DEFAULT_TENANT_ID, StoreEmulator
from store_async.errors import AuthenticationError
from store_async.models import ConsumeRequest, UserIdentity

SCOPE = "https://onestore.microsoft.com/.default"


@pytest.fixture
async def tls_emulator() -> AsyncIterator[StoreEmulator]:
    async with StoreEmulator(tls=True) as emulator:
        yield emulator


def credential_for(emu: StoreEmulator, secret: str | None = None) -> ClientSecretCredential:
    return ClientSecretCredential(
        emu.tenant_id,
        emu.client_id,
        secret or emu.client_secret,
        authority=emu.authority,
        connection_verify=emu.ca_file,  # azure-core wants a path to a CA file
    )


async def test_client_secret_credential_gets_a_token_and_a_consume_succeeds_with_it(
    tls_emulator: StoreEmulator,
) -> None:
    emu = tls_emulator
    assert emu.url.startswith("https://127.0.0.1:")
    assert emu.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    item = emu.add_consumable("user-1", "9NBLGGH42CFD")
    request = ConsumeRequest.for_item(
        UserIdentity(identity_value="user-1", local_ticket_reference="ref"), item.item_id
    )
    async with credential_for(emu) as credential:
        token = await credential.get_token(SCOPE)
        claims = jwt.decode(token.token, options={"verify_signature": False})
        assert claims["appid"] == emu.client_id
        assert claims["aud"] == "https://onestore.microsoft.com"
        assert claims["tid"] == emu.tenant_id
        async with StoreClient(
            credential, endpoints=emu.endpoints, ssl_context=emu.client_ssl_context()
        ) as store:
            result = await store.consume(request)
    assert result.attempts == 1
    assert result.request_id is not None
    assert emu.ledger.applied(request.idempotency_key) == 1
    assert emu.tokens_issued == 1  # the client reused the credential's cached token


async def test_a_wrong_secret_is_a_clear_authentication_error(tls_emulator: StoreEmulator) -> None:
    async with credential_for(tls_emulator, secret="not-the-secret") as credential:
        with pytest.raises(ClientAuthenticationError) as caught:
            await credential.get_token(SCOPE)
    message = str(caught.value)
    assert "invalid_client" in message
    assert "AADSTS7000215" in message
    assert "not-the-secret" not in message
    assert tls_emulator.tokens_issued == 0


async def test_defaults_are_documented_constants() -> None:
    async with StoreEmulator() as emu:
        assert (emu.tenant_id, emu.client_id) == (DEFAULT_TENANT_ID, DEFAULT_CLIENT_ID)
        assert emu.authority == emu.url.removeprefix("http://")
        with pytest.raises(RuntimeError, match="tls=True"):
            _ = emu.ca_file


# -- the token endpoint on the wire ----------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def token_request(
    session: aiohttp.ClientSession,
    emu: StoreEmulator,
    form: dict[str, str],
    *,
    tenant: str | None = None,
    v1: bool = False,
) -> tuple[int, dict[str, Any]]:
    path = "oauth2/token" if v1 else "oauth2/v2.0/token"
    async with session.post(f"{emu.url}/{tenant or emu.tenant_id}/{path}", data=form) as answer:
        return answer.status, orjson.loads(await answer.read())


def good_form(emu: StoreEmulator, **changes: str) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "scope": SCOPE,
    }
    form.update(changes)
    return {key: value for key, value in form.items() if value}


@pytest.mark.parametrize(
    ("changes", "tenant", "status", "error", "code"),
    [
        ({}, "other-tenant", 400, "invalid_request", 90002),
        ({"grant_type": "password"}, None, 400, "unsupported_grant_type", 70003),
        ({"grant_type": ""}, None, 400, "invalid_request", 900144),
        ({"client_id": "someone-else"}, None, 400, "unauthorized_client", 700016),
        ({"client_secret": ""}, None, 401, "invalid_client", 7000216),
        ({"client_secret": "wrong"}, None, 401, "invalid_client", 7000215),
        ({"scope": ""}, None, 400, "invalid_request", 900144),
        ({"scope": "https://onestore.microsoft.com"}, None, 400, "invalid_scope", 1002012),
    ],
)
async def test_token_endpoint_errors_have_the_entra_shape(
    session: aiohttp.ClientSession,
    changes: dict[str, str],
    tenant: str | None,
    status: int,
    error: str,
    code: int,
) -> None:
    async with StoreEmulator() as emu:
        got_status, body = await token_request(
            session, emu, good_form(emu, **changes), tenant=tenant
        )
    assert (got_status, body["error"], body["error_codes"]) == (status, error, [code])
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert {"timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)


async def test_v1_token_endpoint_with_resource(session: aiohttp.ClientSession) -> None:
    async with StoreEmulator(token_lifetime=600) as emu:
        form = good_form(emu, scope="")
        form["resource"] = "https://onestore.microsoft.com"
        status, body = await token_request(session, emu, form, v1=True)
    assert status == 200
    assert (body["token_type"], body["expires_in"], body["resource"]) == (
        "Bearer",
        600,
        "https://onestore.microsoft.com",
    )
    assert int(body["expires_on"]) > 0


async def test_issued_tokens_work_until_expired(session: aiohttp.ClientSession) -> None:
    async with StoreEmulator(auto_create=True) as emu:
        status, body = await token_request(session, emu, good_form(emu))
        assert (status, body["token_type"], body["expires_in"]) == (200, "Bearer", 3600)

        async def consume(token: str, tracking: str) -> tuple[int, bytes]:
            payload = {
                "beneficiary": {
                    "identityType": "b2b",
                    "identityValue": "u",
                    "localTicketReference": "r",
                },
                "itemId": tracking,
                "trackingId": tracking,
            }
            url, headers = (
                f"{emu.url}/v6.0/collections/consume",
                {"Authorization": f"Bearer {token}"},
            )
            async with session.post(url, json=payload, headers=headers) as answer:
                return answer.status, await answer.read()

        first = "11111111-1111-4111-8111-111111111111"
        second = "22222222-2222-4222-8222-222222222222"
        assert (await consume(body["access_token"], first))[0] == 204
        assert emu.expire_tokens() == 1
        status, error = await consume(body["access_token"], second)
        assert status == 401
        assert orjson.loads(error)["innererror"]["code"] == "AuthenticationTokenInvalid"
        assert (await consume(emu.dev_token, second))[0] == 204  # the dev token never expires
        _, fresh = await token_request(session, emu, good_form(emu))
        assert (await consume(fresh["access_token"], second))[0] == 204
        assert emu.tokens_issued == 2


async def test_store_client_surfaces_an_expired_static_token(
    session: aiohttp.ClientSession,
) -> None:
    async with StoreEmulator(auto_create=True) as emu:
        from store_async.credentials import StaticTokenCredential

        expired = StaticTokenCredential(emu.mint_access_token(lifetime=-1))
        request = ConsumeRequest.for_item(
            UserIdentity(identity_value="u", local_ticket_reference="r"), "item"
        )
        async with StoreClient(expired, endpoints=emu.endpoints) as store:
            with pytest.raises(AuthenticationError) as caught:
                await store.consume(request)
    assert (caught.value.status, caught.value.inner_code) == (401, "AuthenticationTokenInvalid")
    assert emu.ledger.total == 0


@pytest.mark.parametrize("v1", [False, True])
async def test_a_token_form_that_is_not_utf8_is_a_400_not_a_crash(
    session: aiohttp.ClientSession, v1: bool
) -> None:
    async with StoreEmulator() as emu:
        path = "oauth2/token" if v1 else "oauth2/v2.0/token"
        async with session.post(
            f"{emu.url}/{emu.tenant_id}/{path}",
            data=b"grant_type=\xff\xfe",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ) as answer:
            status, body = answer.status, orjson.loads(await answer.read())
    assert (status, body["error"], body["error_codes"]) == (400, "invalid_request", [900144])
