"""``store-async emulator``: run the Store emulator until SIGINT/SIGTERM.

The first line on stdout is the base URL, the second a development bearer token the emulator
accepts (the ``--token`` value when given), so scripts can read exactly two lines and go::

    $ store-async emulator --port 8080 --fault-rate 0.1 --seed 7
    http://127.0.0.1:8080
    emulator-dev-...

Consumables are created on first consume (``auto_create``), so ``store-async fulfill`` and load
tests can target it without seeding. With ``--tls`` the CA certificate's path is printed on
stderr (trust it, or pass it to azure-identity as ``connection_verify``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from store_async.cli._arguments import integer, real
from store_async.cli._loop import add_loop_option
from store_async.cli._loop import run as run_loop

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
        help="the development bearer token to accept (random when absent)",
    )
    parser.add_argument(
        "--strict-keys",
        action="store_true",
        help="accept only Store ID keys minted by the emulator as identity values",
    )


def run(args: argparse.Namespace) -> int:
    return run_loop(_serve(args), args.loop)


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
