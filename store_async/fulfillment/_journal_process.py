"""The SQLite journal's writer in a process of its own: ``SqliteJournal(writer="process")``.

Why a process
    A writer *thread* shares the GIL with the event loop. sqlite3 releases the GIL around every
    statement, and each time the thread takes it back (binding parameters, building rows and
    answers) the loop's thread waits, at every socket call it makes. Under load that cost the
    loop more than the writer's own SQL. In a process of its own the writer runs on another
    core and the loop only encodes each operation (one ``orjson.dumps``) and writes one frame
    per loop turn to a pipe.

Durability is unchanged: the writer commits (``synchronous=FULL`` by default) *before* it
answers, and a claim's awaitable completes only on that answer. If the fulfilling process dies,
the writer reads the frames that reached it whole, commits them (claims are intents: a pending
row is always safe to resend) and exits; a half-written frame is dropped (its claims were never
answered, so nothing of it was sent). The writer ignores the terminal's signals (its own
session): a Ctrl-C stops the fulfiller, which then flushes through its writer.

The lock: the writer inherits the journal's ``flock``\\ ed file, so the lock is held until both
processes are gone: a second fulfill cannot start while a dying one's writer still commits.

Wire format, both ways: frames of a 4-byte little-endian length and one JSON array.

- To the writer: ``[claims, marks, waiters, definitions, forget_below]``; a claim is ``[key,
  line, caller_tracking_id, beneficiary number, item_id, tracking_id, product_id,
  transaction_id, remove_quantity, include_order_ids, sandbox_id]``, a mark ``[kind, *row]``
  (the rows of ``done_row``/``error_row``), a waiter ``[kind, payload]``, a definition
  ``[number, identity_type, identity_value, local_ticket_reference]`` (each beneficiary
  crosses once; numbers below ``forget_below`` are dropped after the frame's claims).
- From the writer, after each commit: ``[frames, claim answers, waiter answers, commits]``
  (a claim answer is ``null`` for "send it as it is", else ``[outcome, detail,
  idempotency_key, failure]``), or ``[-1, message]`` when the journal cannot be written (the
  writer then exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import orjson

from store_async.fulfillment._schema import connect
from store_async.fulfillment._sqlite_store import JournalStore, _with_idempotency_key
from store_async.fulfillment.journal import (
    Claim,
    ClaimOutcome,
    FailureInfo,
    Fulfillment,
    JournalError,
)

__all__ = ["BUSY", "CLOSE", "ENOUGH_CLAIMS", "FLUSH", "KEY", "RUN", "ProcessWriter", "main"]

_LENGTH: Final = struct.Struct("<I")
_READ: Final = 1 << 20
# Operations that wait for their commit besides claims (rare: one per run, flush, close or
# renewed Store ID key), for both writers.
FLUSH, RUN, CLOSE, KEY = range(4)
_SHIP_GAP: Final = 0.002  # seconds between frames at least, under load (see _ship_soon)
BUSY: Final = 8  # operations in one commit from which a writer spaces its commits, both writers
# Claims for which a writer spacing its commits commits at once, both writers: workers wait for
# their claims, so under heavy load the commit interval must not bound throughput. Half of the
# Fulfiller's DEFAULT_CLAIM_AHEAD: the other half keeps the workers busy during the commit.
ENOUGH_CLAIMS: Final = 512
_EXIT_WAIT: Final = 1.0  # seconds a dead writer's exit code is waited for, at most
_EXIT_POLL: Final = 0.005
_IDENTITIES: Final = 4096  # Store ID keys the writer keeps decoded (bounded, like the store's)


def _claim_row(fulfillment: Fulfillment, identity: int) -> bytes:
    request = fulfillment.request
    return orjson.dumps(
        (
            fulfillment.key,
            fulfillment.line,
            fulfillment.caller_tracking_id,
            identity,
            request.item_id,
            request.tracking_id,
            request.product_id,
            request.transaction_id,
            request.remove_quantity,
            request.include_order_ids,
            request.sandbox_id,
        )
    )


class _Frame:
    """What the parent waits for from one frame it sent."""

    __slots__ = ("claims", "marks", "waiters")

    def __init__(
        self,
        claims: list[tuple[Fulfillment, asyncio.Future[Claim]]],
        waiters: list[tuple[int, asyncio.Future[Any]]],
        marks: int,
    ) -> None:
        self.claims = claims
        self.waiters = waiters
        self.marks = marks


class ProcessWriter:
    """The event-loop side: queue operations, ship them in frames, settle the answers.

    ``on_marks`` is told how many marks each answered frame carried; ``on_broken`` gets the
    reason once the journal cannot be written (the caller then refuses new work).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        commit_interval: float,
        max_batch: int,
        lock_fd: int,
        on_marks: Callable[[int], None],
        on_broken: Callable[[str], None],
    ) -> None:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = (
            f"import sys; sys.path.insert(0, {root!r}); "
            "from store_async.fulfillment._journal_process import main; main()"
        )
        arguments = (path, synchronous, repr(commit_interval), str(max_batch))
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", code, *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # quiet: the writer reports through its answers
                pass_fds=(lock_fd,),
                start_new_session=True,  # the terminal's Ctrl-C is for the fulfiller, not us
            )
        except OSError as error:  # no usable interpreter (an embedded or frozen Python)
            raise JournalError(
                f"cannot start the writer process of journal {path} "
                f"({sys.executable or 'no sys.executable'}: {error.strerror}); "
                "use writer='thread'"
            ) from None
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._out_fd = self._process.stdin.fileno()
        self._in_fd = self._process.stdout.fileno()
        os.set_blocking(self._out_fd, False)
        os.set_blocking(self._in_fd, False)
        self._path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_marks = on_marks
        self._on_broken = on_broken
        self._claims: list[bytes] = []
        # Each beneficiary (a Store ID key: a kilobyte or more) crosses the pipe once, as a
        # numbered definition; claims name its number. Numbers are never reused; when the
        # table is full it starts afresh and the writer forgets the numbers below.
        self._identities: dict[Any, int] = {}
        self._definitions: list[bytes] = []
        self._next_identity = 1
        self._forget_below = 0
        self._claimed: list[tuple[Fulfillment, asyncio.Future[Claim]]] = []
        self._marks: list[bytes] = []
        self._waiters: list[bytes] = []
        self._waiting: list[tuple[int, asyncio.Future[Any]]] = []
        self._frames: deque[_Frame] = deque()
        self._out = bytearray()
        self._in = bytearray()
        self._writing = False
        self._shipping = False
        self._shipped = float("-inf")  # loop time of the last frame
        self._gone = False
        self.commits = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read the writer's answers on ``loop`` (the loop of the journal's first use)."""
        self._loop = loop
        loop.add_reader(self._in_fd, self._readable)

    # -- queueing (event loop) -------------------------------------------------------------------

    def claim(self, fulfillment: Fulfillment, future: asyncio.Future[Claim]) -> None:
        """Queue a claim. Raises ``orjson.JSONEncodeError`` (a string that is not UTF-8)."""
        beneficiary = fulfillment.request.beneficiary
        identity = self._identities.get(beneficiary)
        if identity is None:
            identity = self._define(beneficiary)
        self._claims.append(_claim_row(fulfillment, identity))
        self._claimed.append((fulfillment, future))
        self._ship_soon()

    def _define(self, beneficiary: Any) -> int:
        definition = orjson.dumps(
            (
                self._next_identity,
                beneficiary.identity_type,
                beneficiary.identity_value,
                beneficiary.local_ticket_reference,
            )
        )
        if len(self._identities) >= _IDENTITIES:
            self._identities.clear()
            self._forget_below = self._next_identity  # after this frame's claims are read
        identity = self._identities[beneficiary] = self._next_identity
        self._next_identity += 1
        self._definitions.append(definition)
        return identity

    def mark(self, kind: int, row: tuple[Any, ...]) -> None:
        self._marks.append(orjson.dumps((kind, *row)))
        self._ship_soon()

    def wait(self, kind: int, payload: Any, future: asyncio.Future[Any]) -> None:
        if self._gone:  # failed: the journal refuses all but close, which has nothing to wait for
            future.set_result(None)
            return
        self._waiters.append(orjson.dumps((kind, payload)))
        self._waiting.append((kind, future))
        assert self._loop is not None
        self._loop.call_soon(self._ship)  # flush, close, a new run: at once

    def _ship_soon(self) -> None:
        """Ship at the end of this loop turn; under load, at most every ``_SHIP_GAP``: each
        frame is a system call here and a wake-up of the writer, and a busy loop turns every
        few hundred microseconds, with a mark or two each time. Claims are queued ahead of the
        workers (see the Fulfiller), so a claim shipped later keeps nobody waiting."""
        if not self._shipping:
            self._shipping = True
            loop = self._loop
            assert loop is not None  # attached by the journal's first use
            at = self._shipped + _SHIP_GAP
            if loop.time() >= at:
                loop.call_soon(self._ship)
            else:
                loop.call_at(at, self._ship)

    def _ship(self) -> None:
        """Send everything queued as one frame."""
        self._shipping = False
        if self._gone or not (self._claims or self._marks or self._waiters):
            return
        assert self._loop is not None
        self._shipped = self._loop.time()
        frame = b"".join(
            (
                b"[[",
                b",".join(self._claims),
                b"],[",
                b",".join(self._marks),
                b"],[",
                b",".join(self._waiters),
                b"],[",
                b",".join(self._definitions),
                b"],%d]" % self._forget_below,
            )
        )
        self._frames.append(_Frame(self._claimed, self._waiting, len(self._marks)))
        self._claims, self._claimed, self._marks = [], [], []
        self._waiters, self._waiting, self._definitions = [], [], []
        self._forget_below = 0
        self._out += _LENGTH.pack(len(frame))
        self._out += frame
        self._write()

    def _write(self) -> None:
        try:
            written = os.write(self._out_fd, self._out)
        except BlockingIOError:
            written = 0
        except OSError:  # the writer is gone: _readable reports it
            self._out.clear()
            written = 0
        del self._out[:written]
        assert self._loop is not None
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self._out_fd, self._write)
        elif not self._out and self._writing:
            self._writing = False
            self._loop.remove_writer(self._out_fd)

    # -- answers (event loop) --------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data = os.read(self._in_fd, _READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._exited()
            return
        buffer = self._in
        buffer += data
        start = 0
        while len(buffer) - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if len(buffer) - start - 4 < size:
                break
            answer = orjson.loads(memoryview(buffer)[start + 4 : start + 4 + size])
            start += 4 + size
            if answer[0] == -1:
                self._broken(str(answer[1]))
                return
            self._settle(*answer)
        del buffer[:start]

    def _settle(self, frames: int, claims: list[Any], waiters: list[Any], commits: int) -> None:
        self.commits = commits
        marks = claimed = waited = 0
        for _ in range(frames):
            frame = self._frames.popleft()
            marks += frame.marks
            answers = claims[claimed : claimed + len(frame.claims)]
            claimed += len(frame.claims)
            for (fulfillment, future), answer in zip(frame.claims, answers, strict=True):
                if not future.cancelled():
                    future.set_result(_claim(fulfillment, answer))
            values = waiters[waited : waited + len(frame.waiters)]
            waited += len(frame.waiters)
            for (_, future), value in zip(frame.waiters, values, strict=True):
                if not future.cancelled():
                    future.set_result(value)
        self._on_marks(marks)

    def _broken(self, reason: str) -> None:
        """Fail every operation sent and queued; later ones are refused by the journal."""
        self._on_broken(reason)
        self._stop_reading()
        pending = [*self._frames, _Frame(self._claimed, self._waiting, len(self._marks))]
        self._frames.clear()
        self._claims, self._claimed, self._marks, self._waiters, self._waiting = [], [], [], [], []
        for frame in pending:
            futures = [future for _, future in frame.claims]
            for kind, future in frame.waiters:
                if kind == CLOSE:
                    if not future.done():
                        future.set_result(None)
                else:
                    futures.append(future)
            for future in futures:
                if not future.done():
                    future.set_exception(JournalError(reason))
                    future.exception()  # retrieved: see SqliteJournal._settle

    def _exited(self) -> None:
        """End of file from the writer: it is gone. Its exit code can lag the end of file by a
        moment; wait for it on the loop's timers (never blocking the loop), 1 s at most. Until
        then, operations queue as usual; :meth:`_broken` then fails them all."""
        assert self._loop is not None
        self._loop.remove_reader(self._in_fd)
        self._report_exit(self._loop.time() + _EXIT_WAIT)

    def _report_exit(self, until: float) -> None:
        code = self._process.poll()
        assert self._loop is not None
        if code is None and self._loop.time() < until:
            self._loop.call_later(_EXIT_POLL, self._report_exit, until)
            return
        self._broken(
            f"journal {self._path} could not be written: its writer process exited"
            + (f" (code {code})" if code is not None else "")
            + "; what it committed is kept: rerun to resume (a killed writer: see the system "
            "log, e.g. for the out-of-memory killer)"
        )

    def _stop_reading(self) -> None:
        if not self._gone:
            self._gone = True
            if self._loop is None:
                return
            self._loop.remove_reader(self._in_fd)
            if self._writing:
                self._writing = False
                self._loop.remove_writer(self._out_fd)

    async def wait_closed(self) -> None:
        """After the close answer (or a failure): let the writer exit, release the pipes."""
        self._stop_reading()
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.close()  # EOF: the writer exits if it has not yet
        await asyncio.to_thread(self._process.wait)
        self._process.stdout.close()

    def kill(self) -> None:
        """For tests: the writer dies as under the OOM killer."""
        self._process.kill()


def _claim(fulfillment: Fulfillment, answer: Any) -> Claim:
    request = fulfillment.request
    if answer is None:
        return Claim(outcome=ClaimOutcome.SEND, request=request)
    outcome, detail, idempotency_key, failure = answer
    return Claim(
        outcome=ClaimOutcome(outcome),
        request=_with_idempotency_key(request, idempotency_key) if idempotency_key else None,
        detail=detail,
        failure=FailureInfo(
            error_type=failure[0],
            status=failure[1],
            code=failure[2],
            inner_code=failure[3],
            message=failure[4],
            cv=failure[5],
        )
        if failure is not None
        else None,
    )


# -- the writer process ---------------------------------------------------------------------


def main() -> None:
    """The writer process: ``python -c ... PATH SYNCHRONOUS COMMIT_INTERVAL MAX_BATCH``."""
    path, synchronous = sys.argv[1], sys.argv[2]
    gap, max_batch = float(sys.argv[3]), int(sys.argv[4])
    reader, out = _FrameReader(sys.stdin.fileno()), sys.stdout.fileno()

    def send(value: Any) -> None:
        data = orjson.dumps(value)
        # The fulfilling process may be gone: still commit what it sent, answer nobody.
        with contextlib.suppress(BrokenPipeError):
            _write_all(out, _LENGTH.pack(len(data)) + data)

    # Here, not at the top: sqlite_journal imports this module.
    from store_async.fulfillment.sqlite_journal import KINDS, apply_batch

    try:
        connection = connect(path, readonly=False, synchronous=synchronous)  # type: ignore[arg-type]
    except JournalError as error:
        send((-1, error.message))
        return
    store, decoder = JournalStore(connection), _Decoder()
    commits, last_commit, last_size = 0, 0.0, 0
    running = True
    while running:
        frames = reader.frames(wait=None)
        if not frames:
            break  # the fulfilling process is gone and everything it sent is committed
        if last_size >= BUSY:  # under load: fuller commits (see SqliteJournal)
            deadline = last_commit + gap
            while not _commit_now(frames):
                left = deadline - time.monotonic()
                if left <= 0 or reader.eof:
                    break
                frames += reader.frames(wait=left)
        while frames:
            group: list[list[Any]] = []
            claims = 0
            while frames and (not group or claims + len(frames[0][0]) <= max_batch):
                claims += len(frames[0][0])
                group.append(frames.pop(0))
            rows = [row for frame in group for row in decoder.claims(frame)]
            marks = [tuple(mark[1:]) for frame in group for mark in frame[1]]
            kinds = [KINDS[mark[0]] for frame in group for mark in frame[1]]
            waiters = [decoder.waiter(*waiter) for frame in group for waiter in frame[2]]
            running = running and all(kind != CLOSE for kind, _ in waiters)
            try:
                decide = functools.partial(decoder.decide, store, rows) if rows else None
                values = apply_batch(connection, store, decide, marks, kinds, waiters, decoder.pid)
            except Exception as error:
                import sqlite3

                detail = str(error) if isinstance(error, sqlite3.Error) else type(error).__name__
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                send((-1, f"journal {path} could not be written: {detail}"))
                return
            commits += 1
            count = len(rows)
            send((len(group), values[:count], values[count:], commits))
            last_commit, last_size = time.monotonic(), count + len(marks)
    connection.close()


def _commit_now(frames: list[list[Any]]) -> bool:
    """Whether a writer spacing its commits should stop waiting: a waiter (flush, close, a new
    run) never waits, and :data:`ENOUGH_CLAIMS` claims are a full commit."""
    return any(frame[2] for frame in frames) or sum(len(f[0]) for f in frames) >= ENOUGH_CLAIMS


def _answer(fulfillment: Fulfillment, claim: Claim) -> Any:
    if claim.outcome is ClaimOutcome.SEND and claim.request is fulfillment.request:
        return None
    failure = claim.failure
    return (
        claim.outcome.value,
        claim.detail,
        claim.request.idempotency_key if claim.request is not None else None,
        (
            failure.error_type,
            failure.status,
            failure.code,
            failure.inner_code,
            failure.message,
            failure.cv,
        )
        if failure is not None
        else None,
    )


class _Decoder:
    """Rows of the wire as the journal store takes them (Store ID keys decoded once each)."""

    def __init__(self) -> None:
        from store_async.models import ConsumeRequest, UserIdentity

        self._request, self._identity = ConsumeRequest, UserIdentity
        self._identities: dict[tuple[str, str, str], Any] = {}
        self._numbered: dict[int, Any] = {}
        self.pid: int | None = None

    def claims(self, frame: list[Any]) -> list[list[Any]]:
        """The claim rows of one frame, each with its beneficiary in place of its number (read
        after the frame's definitions; then the numbers the parent dropped are forgotten)."""
        claims: list[list[Any]] = frame[0]
        definitions, forget_below = frame[3], frame[4]
        numbered = self._numbered
        for number, identity_type, value, ticket in definitions:
            numbered[number] = self.identity(identity_type, value, ticket)
        for row in claims:
            row[3] = numbered[row[3]]
        if forget_below:
            self._numbered = {n: i for n, i in numbered.items() if n >= forget_below}
        return claims

    def decide(self, store: JournalStore, rows: list[list[Any]], now: float) -> list[Any]:
        """The answers to a batch's claims. Fast path (new keys): their rows are built straight
        from the wire, with no request objects, and every answer is ``None`` (send as it is)."""

        def built(added: list[Any]) -> list[tuple[Any, ...]]:
            run_id, beneficiary_id = store.run_id, store.beneficiary_id
            return [
                (
                    key,
                    tracking_id if tracking_id is not None else transaction_id,
                    caller or transaction_id is not None,
                    item_id,
                    product_id,
                    beneficiary_id(beneficiary, added),
                    run_id,
                    line,
                    now,
                    now,
                    quantity,
                    include,
                    sandbox,
                )
                for (
                    key,
                    line,
                    caller,
                    beneficiary,
                    item_id,
                    tracking_id,
                    product_id,
                    transaction_id,
                    quantity,
                    include,
                    sandbox,
                ) in rows
            ]

        if store.insert_all(built):
            return [None] * len(rows)
        fulfillments = [self.fulfillment(row) for row in rows]
        claims = store.claim_each(fulfillments, now)
        return [_answer(f, c) for f, c in zip(fulfillments, claims, strict=True)]

    def identity(self, identity_type: str, value: str, ticket: str) -> Any:
        found = self._identities.get((identity_type, value, ticket))
        if found is None:
            if len(self._identities) >= _IDENTITIES:
                self._identities.clear()
            found = self._identities[identity_type, value, ticket] = self._identity(
                identity_type=identity_type, identity_value=value, local_ticket_reference=ticket
            )
        return found

    def fulfillment(self, row: list[Any]) -> Fulfillment:
        (key, line, caller, beneficiary, *fields) = row
        item_id, tracking_id, product_id, transaction_id, quantity, include, sandbox = fields
        request = self._request(
            beneficiary=beneficiary,
            item_id=item_id,
            tracking_id=tracking_id,
            product_id=product_id,
            transaction_id=transaction_id,
            remove_quantity=quantity,
            include_order_ids=include,
            sandbox_id=sandbox,
        )
        return Fulfillment(key=key, request=request, line=line, caller_tracking_id=caller)

    def waiter(self, kind: int, payload: Any) -> tuple[int, Any]:
        if kind == RUN:  # (retry_failed, the fulfilling process's pid, for the runs table)
            retry_failed, self.pid = payload
            return kind, retry_failed
        if kind == KEY:
            identity_type, value, ticket, new_value = payload
            return kind, (self.identity(identity_type, value, ticket), new_value)
        return kind, payload


class _FrameReader:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self.eof = False

    def frames(self, *, wait: float | None) -> list[list[Any]]:
        """The whole frames that arrived, waiting up to ``wait`` seconds for one (``None``: as
        long as it takes); ``[]`` when none came, or at the end of the input (:attr:`eof`)."""
        frames = self._take()
        while not self.eof:
            readable, _, _ = select.select([self._fd], [], [], 0 if frames else wait)
            if not readable:
                break
            data = os.read(self._fd, _READ)
            if not data:
                self.eof = True
                break
            self._buffer += data
            frames += self._take()
        return frames

    def _take(self) -> list[list[Any]]:
        buffer, start, frames = self._buffer, 0, []
        while len(buffer) - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if len(buffer) - start - 4 < size:
                break
            frames.append(orjson.loads(memoryview(buffer)[start + 4 : start + 4 + size]))
            start += 4 + size
        del buffer[:start]
        return frames


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
