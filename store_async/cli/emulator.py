"""``store-async emulator``: run the Store emulator until SIGINT/SIGTERM.

The first line on stdout is the base URL, the second a development bearer token the emulator
accepts (the ``--token`` value when given), so scripts can read exactly two lines and go::

    $ store-async emulator --port 8080 --fault-rate 0.1 --seed 7
    http://127.0.0.1:8080
    emulator-dev-...

With ``--json`` the first line is instead one JSON object, for scripts that want more than two
values: ``url``, ``token``, ``tenantId``, ``clientId``, ``clientSecret``, ``authority``,
``caFile`` (``null`` without ``--tls``), ``seed``, and ``storeIdKeys`` (``{user: {"collections":
key, "purchase": key}}`` for each ``--key-for USER``)::

    $ store-async emulator --port 0 --json --key-for user-1 | head -1 | jq -r .url

Consumables are created on first consume (``auto_create``), so ``store-async fulfill`` and load
tests can target it without seeding. With ``--tls`` the CA certificate's path is printed on
stderr (trust it, or pass it to azure-identity as ``connection_verify``).

``store-async emulator mint-key USER [--kind collections|purchase] --url URL`` asks a running
emulator's control plane (``POST /_emulator/keys``) for a Store ID key it accepts and prints the
key alone, for shells: ``KEY=$(store-async emulator mint-key alice --url $URL)``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING, Any

import orjson

from store_async.cli._arguments import integer, real
from store_async.cli._loop import add_loop_option
from store_async.cli._loop import run as run_loop

if TYPE_CHECKING:
    from store_async.emulator import StoreEmulator

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_loop_option(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=integer(0, 65535), default=8080, help="port (8080; 0 = any free port)"
    )
    parser.add_argument(
        "--fault-rate",
        type=real(0.0, 1.0),
        default=0.0,
        metavar="R",
        help="probability of an injected fault per Store request (0)",
    )
    parser.add_argument("--seed", type=int, default=None, help="fault seed (random when absent)")
    parser.add_argument(
        "--retry-after",
        type=real(0.0),
        default=1.0,
        metavar="SECONDS",
        help="Retry-After sent with injected 429/503 answers (1)",
    )
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a throw-away CA")
    parser.add_argument(
        "--latency",
        type=real(0.0, 3600.0),
        default=0.0,
        metavar="SECONDS",
        help="answer every call this late, like a real Store round trip (0; e.g. 0.1)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="the development bearer token to accept (random when absent; an argument is "
        "visible to other local users in `ps`)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (url, token, tenant, client id and secret, authority, CA "
        "file, seed, Store ID keys) as the first line instead of the URL and token lines",
    )
    parser.add_argument(
        "--key-for",
        action="append",
        default=[],
        metavar="USER",
        help="with --json: also mint a collections and a purchase Store ID key for USER "
        "(repeatable)",
    )
    parser.add_argument(
        "--refund-queue",
        default=None,
        metavar="URL",
        help="SAS URI of an Azure Storage queue (add, read, process) to serve as the refund "
        "event queue (GET /v8.0/b2b/clawback/sastoken; POST /_emulator/refunds fills it)",
    )
    parser.add_argument(
        "--strict-keys",
        action="store_true",
        help="accept only Store ID keys minted by the emulator as identity values",
    )
    _configure_mint_key(parser)
    parser.add_argument(
        "--user-limit",
        type=_user_limit,
        default=None,
        metavar="OPS/SECONDS",
        help="per-user rate limit like the Store's (e.g. 200/300; queries get half); default: none",
    )


def _user_limit(text: str) -> tuple[int, float]:
    from store_async.emulator.limits import UserLimits

    try:
        limits = UserLimits.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return limits.ops, limits.seconds


def run(args: argparse.Namespace) -> int:
    if getattr(args, "action", None) == "mint-key":
        return _mint_key(args)
    if args.key_for and not args.json:
        print("store-async emulator: --key-for needs --json", file=sys.stderr)
        return 1
    hang_ups, handler = _HangUps(), logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR if args.quiet else logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    server_log.addFilter(hang_ups)
    server_log.addHandler(handler)
    server_log.propagate = False
    try:
        return run_loop(_serve(args), args.loop)
    finally:
        server_log.removeFilter(hang_ups)
        server_log.removeHandler(handler)
        server_log.propagate = True


class _HangUps(logging.Filter):
    """A client that hangs up mid-request is routine for a server (a timeout, a cancelled
    task, a killed load generator): one line, not aiohttp's "Error handling request" traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ConnectionError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "store-async emulator: a client (%s) hung up mid-request: %s"
            record.args = (peer, error.strerror or type(error).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _document(emulator: StoreEmulator, args: argparse.Namespace) -> dict[str, Any]:
    """What ``--json`` prints: everything a script needs to call this emulator."""
    return {
        "url": emulator.url,
        "token": emulator.dev_token,
        "tenantId": emulator.tenant_id,
        "clientId": emulator.client_id,
        "clientSecret": emulator.client_secret,
        "authority": emulator.authority,
        "caFile": emulator.ca_file if args.tls else None,
        "seed": emulator.fault_seed,
        "storeIdKeys": {
            user: {
                kind: emulator.mint_store_id_key(user, kind) for kind in ("collections", "purchase")
            }
            for user in args.key_for
        },
    }


# -- mint-key: a Store ID key from a running emulator's control plane -------------------------


def _configure_mint_key(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    mint = actions.add_parser(
        "mint-key",
        help="print a Store ID key that a running emulator accepts (its control plane)",
        description="Ask a running emulator (POST /_emulator/keys) for a Store ID key and "
        "print it alone on stdout. The key is a secret of the test user: keep it out of logs.",
    )
    mint.add_argument("user", metavar="USER", help="the emulator's user id")
    mint.add_argument(
        "--kind",
        choices=("collections", "purchase"),
        default="collections",
        help="collections (consume, query) or purchase (grant) key (collections)",
    )
    mint.add_argument("--url", required=True, help="the emulator's base URL (its first line)")


def _mint_key(args: argparse.Namespace) -> int:
    import json
    import urllib.error
    import urllib.request

    body = json.dumps({"userId": args.user, "kind": args.kind}).encode()
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/_emulator/keys",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            key = json.loads(answer.read())["key"]
    except urllib.error.HTTPError as error:
        print(
            f"store-async emulator mint-key: the emulator answered HTTP {error.code}",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        print(
            f"store-async emulator mint-key: no emulator at {args.url}: {reason}", file=sys.stderr
        )
        return 1
    print(key)
    return 0


async def _serve(args: argparse.Namespace) -> int:
    from store_async.emulator import FaultPlan, StoreEmulator

    plan = FaultPlan(rate=args.fault_rate, seed=args.seed, retry_after=args.retry_after)
    emulator = StoreEmulator(
        faults=plan,
        tls=args.tls,
        strict_keys=args.strict_keys,
        auto_create=True,
        host=args.host,
        port=args.port,
        dev_token=args.token,
        latency=args.latency,
        user_limit=args.user_limit,
        refund_queue=args.refund_queue,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    try:
        try:
            await emulator.start()
        except OSError as error:
            print(
                f"store-async emulator: cannot listen on {args.host}:{args.port}: "
                f"{error.strerror or error}",
                file=sys.stderr,
            )
            return 1
        try:
            if args.json:
                sys.stdout.write(orjson.dumps(_document(emulator, args)).decode() + "\n")
            else:
                sys.stdout.write(f"{emulator.url}\n{emulator.dev_token}\n")
            sys.stdout.flush()
            print(
                f"store-async emulator: tenant {emulator.tenant_id}, client {emulator.client_id}, "
                f"authority {emulator.authority}, fault rate {args.fault_rate}, "
                f"seed {emulator.fault_seed}",
                file=sys.stderr,
            )
            if args.tls:
                print(f"store-async emulator: CA certificate {emulator.ca_file}", file=sys.stderr)
            sys.stderr.flush()
            await stop.wait()
        finally:
            await emulator.stop()
    finally:
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(number)
    stats = emulator.stats
    print(
        f"store-async emulator: stopped after {sum(stats.requests.values())} requests, "
        f"{sum(stats.faults.values())} faults, {emulator.ledger.total} applied",
        file=sys.stderr,
    )
    return 0
