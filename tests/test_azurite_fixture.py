"""The Azurite fixture skips with a reason without npm, except on CI, where it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import azurite


@pytest.fixture
def no_azurite_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AZURITE_QUEUE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no azurite-queue, no npm
    monkeypatch.setenv("STORE_ASYNC_AZURITE_DIR", str(tmp_path / "cache"))


@pytest.mark.usefixtures("no_azurite_anywhere")
def test_without_npm_the_tests_are_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="npm is not installed"):
        azurite.find_azurite()


@pytest.mark.usefixtures("no_azurite_anywhere")
def test_without_npm_on_ci_the_tests_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Azurite is required on CI"):
        azurite.find_azurite()


def test_a_given_binary_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURITE_QUEUE", "/opt/azurite/bin/azurite-queue")
    assert azurite.find_azurite() == "/opt/azurite/bin/azurite-queue"
