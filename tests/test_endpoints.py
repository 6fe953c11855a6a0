"""Endpoints: production hosts, single-URL routing, and refusal of clear-text remote hosts."""

from __future__ import annotations

import pytest

from store_async.endpoints import Endpoints
from store_async.errors import ValidationError


def test_production_hosts() -> None:
    assert Endpoints.production() == Endpoints(
        collections="https://collections.mp.microsoft.com",
        purchase="https://purchase.mp.microsoft.com",
        business="https://bspmts.mp.microsoft.com",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.0.0.5:1/",
        "http://localhost:9",
        "http://[::1]:8080",
        "https://staging.example.com/store",
    ],
)
def test_single_routes_every_family_to_one_base(url: str) -> None:
    endpoints = Endpoints.single(url)
    base = url.rstrip("/")
    assert (endpoints.collections, endpoints.purchase, endpoints.business) == (base, base, base)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://collections.mp.microsoft.com", "plain http:// is refused for non-loopback host"),
        ("http://10.0.0.1:8080", "plain http:// is refused"),
        ("ftp://127.0.0.1", "absolute http(s) URL"),
        ("127.0.0.1:8080", "absolute http(s) URL"),
        ("", "non-empty URL string"),
        ("https://user:pw@example.com", "must not carry credentials"),
        ("https://example.com/?a=1", "must not carry a query or a fragment"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_error(url: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Endpoints.single(url)
    assert fragment in str(caught.value)
    assert "pw" not in str(caught.value)  # credentials in a URL are never echoed


def test_non_string_is_a_validation_error_not_a_type_error() -> None:
    with pytest.raises(ValidationError):
        Endpoints.single(8080)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://[::1:8080", "not a valid URL"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("https://example.com:port", "not a valid URL"),
    ],
)
def test_unparsable_urls_are_a_validation_error_not_a_value_error(url: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Endpoints.single(url)


def test_a_query_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as caught:
        Endpoints.single("https://store.example.com/?sig=secret-signature")
    assert str(caught.value) == (
        "an endpoint must not carry a query or a fragment (host 'store.example.com')"
    )
