"""``store-async key-info``: exact report lines, exit codes, stdin, and the key never printed."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from store_async.cli import main

CLAIM = "http://schemas.microsoft.com/marketplace/2015/08/claims/key/"
PAYLOAD = "ZdcOq0/N2rjytCRzCHSqnfczv3f0343wfSydx7hghfu0snWzMqyoAGy5DSJ5rMSsKoQFAccs1iNlwlGrX+/eIwh"
SIGNATURE = "c2lnbmF0dXJlLW5vdC12ZXJpZmllZA"


def segment(part: Any) -> str:
    raw = part if isinstance(part, bytes) else json.dumps(part).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def make_key(claims: dict[str, Any]) -> str:
    """An unsigned test key (key-info never verifies signatures)."""
    return f"{segment({'typ': 'JWT', 'alg': 'RS256'})}.{segment(claims)}.{SIGNATURE}"


def claims(**changes: Any) -> dict[str, Any]:
    """The old documentation example (iat 2015-09-16T09:25:42Z, exp + 90 days, nbf - 3601 s)."""
    document = {
        CLAIM + "clientId": "1d5773695a3b44928227393bfef1e13d",
        CLAIM + "payload": PAYLOAD,
        CLAIM + "userId": "infusQMLaYCrgtC0d/SZWoPB4FqLEwHXgZFuMJ6TuTY=",
        CLAIM + "refreshUri": "https://collections.mp.microsoft.com/v6.0/b2b/keys/renew",
        "iat": 1442395542,
        "iss": "https://collections.mp.microsoft.com/v6.0/keys",
        "aud": "https://collections.mp.microsoft.com/v6.0/keys",
        "exp": 1450171541,
        "nbf": 1442391941,
    }
    document.update(changes)
    return document


OLD_KEY = make_key(claims())
NEW_KEY = make_key(claims(iat=1733526889, exp=1733526889 - 3600, nbf=1733526889 + 30 * 86400))

CLAIM_LINES = [
    "kind:          collections",
    "audience:      https://collections.mp.microsoft.com/v6.0/keys",
    "user id:       infusQMLaYCrgtC0d/SZWoPB4FqLEwHXgZFuMJ6TuTY=",
    "client id:     1d5773695a3b44928227393bfef1e13d",
    "refresh uri:   https://collections.mp.microsoft.com/v6.0/b2b/keys/renew",
    "issued:        2015-09-16T09:25:42+00:00",
    "not before:    2015-09-16T08:25:41+00:00",
    "expires:       2015-12-15T09:25:41+00:00",
    "refresh after: 2015-09-30T09:25:42+00:00",
]


def run_cli(
    capsys: pytest.CaptureFixture[str], *argv: str, secrets: tuple[str, ...] = ()
) -> tuple[int, list[str], str]:
    """Run ``store-async`` in-process: (exit code, stdout lines, stderr); no secret may leak."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    for secret in (*secrets, OLD_KEY, NEW_KEY, PAYLOAD, SIGNATURE):
        assert secret not in out
        assert secret not in err
    return code, out.splitlines(), err


def test_valid_key_prints_every_claim_and_when_to_renew(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run_cli(capsys, "key-info", OLD_KEY, "--at", "2015-09-20T00:00:00Z")

    assert code == 0
    assert err == ""
    assert lines == [
        *CLAIM_LINES,
        "status:        valid until 2015-12-15T09:25:41+00:00 "
        "(renew after 2015-09-30T09:25:42+00:00)",
    ]


@pytest.mark.parametrize(
    ("at", "status"),
    [
        # Naive means UTC; an offset is honoured.
        ("2015-09-30T09:25:41", "valid until 2015-12-15T09:25:41+00:00 (renew after "),
        (
            "2015-09-30T11:25:42+02:00",
            "renew now (older than 14 days; valid until 2015-12-15T09:25:41+00:00)",
        ),
        (
            "2015-12-15T09:25:40Z",
            "renew now (older than 14 days; valid until 2015-12-15T09:25:41+00:00)",
        ),
        (
            "2015-12-15T09:25:41Z",
            "expired: since 2015-12-15T09:25:41+00:00 (renew it; if the Store refuses, create "
            "a new key on the client)",
        ),
        (
            "2015-09-16T08:00:00Z",
            "not yet valid: from 2015-09-16T08:25:41+00:00 (until 2015-12-15T09:25:41+00:00)",
        ),
    ],
)
def test_status_line_at_each_stage_of_a_keys_life(
    capsys: pytest.CaptureFixture[str], at: str, status: str
) -> None:
    code, lines, _ = run_cli(capsys, "key-info", "--at", at, OLD_KEY)

    assert code == 0
    assert lines[:-1] == CLAIM_LINES
    assert lines[-1].startswith("status:        " + status)


def test_swapped_documentation_example_is_reported_expired_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, lines, _ = run_cli(capsys, "key-info", NEW_KEY, "--at", "2024-12-06T23:14:49Z")

    assert code == 0
    assert lines[5:] == [
        "issued:        2024-12-06T23:14:49+00:00",
        "not before:    2025-01-05T23:14:49+00:00",
        "expires:       2024-12-06T22:14:49+00:00",
        "refresh after: 2024-12-20T23:14:49+00:00",
        "status:        expired: since 2024-12-06T22:14:49+00:00 (renew it; if the Store "
        "refuses, create a new key on the client)",
        "warning:       exp is not after iat, or nbf is not before exp (exp and nbf may be "
        "swapped); times are taken as written",
    ]


def test_without_at_the_current_time_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    issued = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    expires = issued + timedelta(days=30)
    key = make_key(claims(iat=issued.timestamp(), exp=expires.timestamp(), nbf=issued.timestamp()))

    code, lines, _ = run_cli(capsys, "key-info", key, secrets=(key,))

    assert code == 0
    assert lines[-1] == (
        f"status:        valid until {expires.isoformat()} "
        f"(renew after {(issued + timedelta(days=14)).isoformat()})"
    )


def test_key_from_stdin_is_stripped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"\n  {OLD_KEY}  \r\n"))

    code, lines, err = run_cli(capsys, "key-info", "-", "--at", "2015-09-20T00:00:00+00:00")

    assert code == 0
    assert err == ""
    assert lines[:-1] == CLAIM_LINES
    assert lines[-1].startswith("status:        valid until ")


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "no Store ID key on stdin"),
        (" \n\n", "no Store ID key on stdin"),
        ("x" * 70_000, "stdin holds more than 65536 characters; a Store ID key is far shorter"),
        (f"{OLD_KEY}\n{OLD_KEY}\n", "Store ID key is not a JWT: expected 3 dot-separated parts"),
    ],
)
def test_bad_stdin_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stdin: str, message: str
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))

    code, lines, err = run_cli(capsys, "key-info", "-")

    assert code == 1
    assert lines == []
    assert err.startswith(f"store-async key-info: {message}")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("not-a-key", "Store ID key is not a JWT: expected 3 dot-separated parts, got 1"),
        (
            OLD_KEY.rsplit(".", 1)[0],
            "Store ID key is not a JWT: expected 3 dot-separated parts, got 2",
        ),
        (
            make_key(claims(exp="tomorrow")),
            "Store ID key claim 'exp' must be a number of seconds since the epoch, got a string",
        ),
        (
            make_key(claims(aud="https://onestore.microsoft.com")),
            "Store ID key claim 'aud' is not a Store ID key audience (expected "
            "https://collections.mp.microsoft.com/v6.0/keys or "
            "https://purchase.mp.microsoft.com/v6.0/keys, got 'https://onestore.microsoft.com')",
        ),
    ],
)
def test_malformed_key_exits_1_with_one_line_and_no_traceback(
    capsys: pytest.CaptureFixture[str], key: str, message: str
) -> None:
    code, lines, err = run_cli(capsys, "key-info", key, "--json", secrets=(key,))

    assert code == 1
    assert lines == []
    assert err == f"store-async key-info: {message}\n"


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_cli(capsys, "key-info", "--json", OLD_KEY, "--at", "2015-10-01T00:00:00Z")

    assert code == 0
    assert orjson.loads("\n".join(lines)) == {
        "kind": "collections",
        "audience": "https://collections.mp.microsoft.com/v6.0/keys",
        "user_id": "infusQMLaYCrgtC0d/SZWoPB4FqLEwHXgZFuMJ6TuTY=",
        "client_id": "1d5773695a3b44928227393bfef1e13d",
        "refresh_uri": "https://collections.mp.microsoft.com/v6.0/b2b/keys/renew",
        "issued_at": "2015-09-16T09:25:42+00:00",
        "not_before": "2015-09-16T08:25:41+00:00",
        "expires_at": "2015-12-15T09:25:41+00:00",
        "refresh_after": "2015-09-30T09:25:42+00:00",
        "checked_at": "2015-10-01T00:00:00+00:00",
        "status": "renew",
        "expired": False,
        "needs_refresh": True,
        "inconsistent_times": False,
    }


def test_json_output_of_a_key_without_optional_claims(capsys: pytest.CaptureFixture[str]) -> None:
    document = claims(aud="https://purchase.mp.microsoft.com/v6.0/keys")
    del document["nbf"], document[CLAIM + "userId"]
    key = make_key(document)

    code, lines, _ = run_cli(
        capsys, "key-info", key, "--json", "--at", "2015-09-17", secrets=(key,)
    )

    report = orjson.loads("\n".join(lines))
    assert code == 0
    assert (report["kind"], report["user_id"], report["not_before"]) == ("purchase", None, None)
    assert report["status"] == "valid"


def test_text_output_escapes_control_characters_and_marks_absent_claims(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = claims(**{CLAIM + "clientId": "evil\x1b[2J\nclient"})
    del document["nbf"], document[CLAIM + "userId"]
    key = make_key(document)

    code, lines, _ = run_cli(capsys, "key-info", key, "--at", "2015-09-17", secrets=(key,))

    assert code == 0
    assert lines[2:4] == ["user id:       (none)", "client id:     evil\\x1b[2J\\nclient"]
    assert lines[6] == "not before:    (none)"


def test_unreadable_at_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["key-info", OLD_KEY, "--at", "yesterday"])

    out, err = capsys.readouterr()
    assert exited.value.code == 1  # usage error, as on every command
    assert "argument --at: not an ISO 8601 time: 'yesterday'" in err
    assert OLD_KEY not in out + err


def test_key_info_runs_in_a_fresh_interpreter_without_touching_the_network() -> None:
    # The package root imports the client (and so aiohttp) eagerly, as the public API
    # promises; key-info itself opens no session and sends nothing.
    code = (
        "import sys; from store_async.cli import main; "
        f"rc = main(['key-info', '--json', {OLD_KEY!r}]); "
        "print(rc, 'aiohttp' in sys.modules and any("
        "type(o).__name__ == 'ClientSession' for o in __import__('gc').get_objects()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )

    assert done.stderr == ""
    assert done.stdout.splitlines()[-1] == "0 False"


def test_installed_console_script_reads_the_key_from_stdin() -> None:
    script = Path(sys.executable).with_name("store-async")
    if not script.exists():
        pytest.skip("the store-async console script is not installed next to this interpreter")

    done = subprocess.run(
        [str(script), "key-info", "-", "--at", "2015-09-20"],
        input=OLD_KEY + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    refused = subprocess.run(
        [str(script), "key-info", "-"],
        input="garbage\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[:-1] == CLAIM_LINES
    assert OLD_KEY not in done.stdout
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "store-async key-info: Store ID key is not a JWT: expected 3 dot-separated parts, got 1\n"
    )
