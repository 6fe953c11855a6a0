"""``StoreEmulator``: a real HTTP server that behaves like the Microsoft Store services.

Use it as an async context manager::

    async with StoreEmulator(faults=FaultPlan(rate=0.1, seed=7)) as emu:
        item = emu.add_consumable("user-1", "9NBLGGH42CFD")
        async with StoreClient(emu.credential(), endpoints=emu.endpoints) as store:
            await store.consume(ConsumeRequest.for_item(
                UserIdentity(identity_value="user-1", local_ticket_reference="ref"),
                item.item_id,
            ))
        assert emu.ledger.total == 1

Every API family is served on one base URL (:attr:`StoreEmulator.url`), with the real paths.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from types import TracebackType
from typing import Any, Final, Literal

from aiohttp import web

from store_async.credentials import StaticTokenCredential
from store_async.emulator.faults import FaultPlan, FaultSequence, known_endpoints
from store_async.emulator.keys import DEFAULT_KEY_LIFETIME, StoreIdKeys
from store_async.emulator.ledger import Ledger
from store_async.emulator.limits import UserLimits
from store_async.emulator.refunds import RefundIssuer
from store_async.emulator.request_log import RequestLog
from store_async.emulator.seeding import Seeding
from store_async.emulator.service import StoreService
from store_async.emulator.state import StoreState
from store_async.emulator.stats import EmulatorStats
from store_async.emulator.tls import TlsMaterial
from store_async.emulator.tokens import STORE_AUDIENCE, AccessTokens
from store_async.endpoints import Endpoints
from store_async.errors import ValidationError

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_TENANT_ID",
    "StoreEmulator",
]

DEFAULT_TENANT_ID: Final = "5f1c9e7a-1d2b-4c3d-9e8f-0a1b2c3d4e5f"
DEFAULT_CLIENT_ID: Final = "0d4f7a2c-6b1e-4f3a-8c9d-7e6f5a4b3c2d"
DEFAULT_CLIENT_SECRET: Final = "emulator-client-secret"


class StoreEmulator(Seeding):
    """The Store (Collections, Purchase, Store ID keys, Store for Business) and an Entra ID
    token endpoint, on one loopback port, with seeded fault injection.

    Arguments (all keyword-only):

    - ``faults``: a :class:`FaultPlan` (none by default).
    - ``tls``: serve HTTPS with a throw-away ``trustme`` CA (see :attr:`ca_file`).
    - ``strict_keys``: refuse identity values that are not Store ID keys minted here (by
      default any non-JWT string is an opaque test user id).
    - ``auto_create``: create a consumable (or free product, or business product) the first
      time a request names an unknown one, so load tests need no seeding.
    - ``host``, ``port``: where to listen (``port=0``: any free port).
    - ``tenant_id``, ``client_id``, ``client_secret``: the app registration that the token
      endpoint accepts (defaults: :data:`DEFAULT_TENANT_ID`, :data:`DEFAULT_CLIENT_ID`,
      :data:`DEFAULT_CLIENT_SECRET`).
    - ``dev_token``: a bearer token accepted as the client's own (random by default).
    - ``token_lifetime``: seconds an issued access token lives (``expires_in``).
    - ``key_lifetime``: seconds a minted Store ID key lives (30 days).
    - ``wire_variants``: answer with the documentation's alternative spellings
      (``createdtime``, ``devofferId``, ``Title``) instead of its example's.
    - ``content_length_on_204``: send ``Content-Length: 0`` with 204, as the service does.
    - ``record_requests``: keep every request in :attr:`request_log` (path, headers, body,
      idempotency key, answer), for tests that assert what the client sent.
    - ``user_limit``: per-user rate limits like the Store's, as ``(ops, seconds)`` (queries get
      half) or a :class:`~store_async.emulator.limits.UserLimits` (e.g. with a test clock);
      ``None`` (default): unlimited. See :attr:`user_limits`.
    - ``refund_queue``: SAS URI of a real Azure Storage queue (``raup``) for refund events:
      served by ``GET /v8.0/b2b/clawback/sastoken``, filled by :attr:`refunds` (without it
      that route answers 400, "not onboarded").
    """

    def __init__(
        self,
        *,
        faults: FaultPlan | None = None,
        tls: bool = False,
        strict_keys: bool = False,
        auto_create: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        tenant_id: str = DEFAULT_TENANT_ID,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        dev_token: str | None = None,
        token_lifetime: float = 3600.0,
        key_lifetime: float = DEFAULT_KEY_LIFETIME,
        wire_variants: bool = False,
        content_length_on_204: bool = True,
        record_requests: bool = False,
        user_limit: tuple[int, float] | UserLimits | None = None,
        refund_queue: str | None = None,
        latency: float = 0.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValidationError(f"port must be within 0..65535, got {port}")
        if token_lifetime <= 0 or key_lifetime <= 0:
            raise ValidationError("token_lifetime and key_lifetime must be > 0 seconds")
        for name, value in (
            ("tenant_id", tenant_id),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ):
            if not isinstance(value, str) or not value:
                raise ValidationError(f"{name} must be a non-empty string")
        if faults is not None and not isinstance(faults, FaultPlan):
            raise ValidationError(
                f"faults must be a FaultPlan, e.g. FaultPlan(rate=0.1), got {type(faults).__name__}"
            )
        if not (isinstance(latency, (int, float)) and 0 <= latency < 3600):
            raise ValidationError(f"latency must be within 0..3600 seconds, got {latency!r}")
        self.latency = float(latency)
        """Seconds every answer waits before it is made (a real Store round trip: ~0.1)."""
        self.host = host
        self._port = port
        self._tls_wanted = tls
        self._tls: TlsMaterial | None = None
        self._runner: web.AppRunner | None = None
        self.faults = faults or FaultPlan()
        self.ledger = Ledger()
        """Every applied consume and grant: ``ledger.applied(tracking_id) -> int``."""
        self.stats = EmulatorStats()
        """Requests, faults and answers by endpoint."""
        self._state = StoreState(self.ledger, auto_create=auto_create)
        self._tokens = AccessTokens(
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=client_secret,
            lifetime=token_lifetime,
            dev_token=dev_token or f"emulator-dev-{secrets.token_urlsafe(24)}",
        )
        self._keys = StoreIdKeys(lifetime=key_lifetime)
        self._sequence: FaultSequence = self.faults.sequence()
        self._request_log = RequestLog() if record_requests else None
        self._service = StoreService(
            state=self._state,
            tokens=self._tokens,
            keys=self._keys,
            faults=self._sequence,
            stats=self.stats,
            strict_keys=strict_keys,
            wire_variants=wire_variants,
            content_length_on_204=content_length_on_204,
            request_log=self._request_log,
        )
        self._url: str | None = None
        if user_limit is not None and not isinstance(user_limit, UserLimits):
            user_limit = UserLimits(*user_limit)
        self.user_limits: UserLimits | None = user_limit
        """The per-user rate limits (``throttled``/``admitted`` count by user), if any."""
        self._service.limits = user_limit
        self.refunds = RefundIssuer(refund_queue)
        """Refund events (clawback v2): ``await emulator.refunds.issue(count=..., ...)``."""

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; :attr:`url` is known afterwards."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        if self._tls_wanted and self._tls is None:
            self._tls = TlsMaterial(self.host)
        app = self._service.application()
        if self.latency > 0:
            app.middlewares.append(_fixed_latency(self.latency))
        self.refunds.register(app, self._tokens)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(
                runner,
                self.host,
                self._port,
                ssl_context=self._tls.server_context() if self._tls else None,
                backlog=1024,  # thousands of cold connections must not overflow the queue
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            if self._tls is not None:
                self._tls.close()
                self._tls = None
            raise
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"{'https' if self._tls else 'http'}://{host}:{port}"
        self._keys.refresh_base_url = self._url
        self._tokens.authority_url = self._url

    async def stop(self) -> None:
        """Stop listening, close connections and remove the temporary CA file (requests held
        by ``HANG`` are released first, so their handlers end)."""
        self._service.hanging.release()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._tls is not None:
            self._tls.close()
            self._tls = None

    async def __aenter__(self) -> StoreEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- faults at run time -------------------------------------------------------------

    def set_faults(self, plan: FaultPlan) -> None:
        """Use ``plan`` from the next request on (a fresh seeded sequence; the counters in
        :attr:`stats` and the request log go on)."""
        if not isinstance(plan, FaultPlan):
            raise ValidationError(f"set_faults needs a FaultPlan, got {type(plan).__name__}")
        self.faults = plan
        self._sequence = plan.sequence()
        self._service.set_faults(self._sequence)

    @property
    def request_log(self) -> RequestLog:
        """Every request received (only with ``record_requests=True``)."""
        if self._request_log is None:
            raise RuntimeError(
                "the request log is kept only with StoreEmulator(record_requests=True)"
            )
        return self._request_log

    @property
    def hanging(self) -> int:
        """Requests held by a ``HANG`` fault right now."""
        return self._service.hanging.held

    async def wait_for_hanging(self, count: int = 1) -> None:
        """Return once at least ``count`` requests are held by ``HANG`` (no sleeping: the
        emulator wakes the waiter as each request arrives).

        :raises ValidationError: when ``count`` is not an int >= 0.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValidationError(f"count must be an int >= 0, got {count!r}")
        await self._service.hanging.wait_for(count)

    def release_hanging(self) -> int:
        """Let the requests held by ``HANG`` continue (they are then served as usual and may
        apply); returns how many were released. Later ``HANG`` decisions hold again."""
        return self._service.hanging.release()

    async def wait_for_requests(self, count: int, endpoint: str = "consume") -> None:
        """Return once ``endpoint`` has received ``count`` requests since the emulator started
        (faulted ones included; the request wakes the waiter: no polling). Tests use it to act
        at a chosen moment of a run, e.g. to SIGKILL a worker after its 1,000th consume.

        :raises ValidationError: when ``count`` is not an int >= 0 or ``endpoint`` is unknown.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValidationError(f"count must be an int >= 0, got {count!r}")
        if endpoint not in known_endpoints():
            raise ValidationError(
                f"unknown endpoint {endpoint!r}; known: {', '.join(known_endpoints())}"
            )
        await self.stats.wait_for_requests(count, endpoint)

    async def wait_released(self) -> None:
        """Return once every released request has been answered (its change applied or
        not), so the ledger is final."""
        await self._service.hanging.wait_answered()

    # -- where and who -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of every API family, e.g. ``http://127.0.0.1:40123`` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the emulator is not started: use 'async with StoreEmulator()'")
        return self._url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def endpoints(self) -> Endpoints:
        """``Endpoints.single(url)``: Collections, Purchase and Business all here."""
        return Endpoints.single(self.url)

    @property
    def authority(self) -> str:
        """``host:port`` for azure-identity's ``authority=`` (it adds ``https://``)."""
        return self.url.split("://", 1)[1]

    @property
    def tenant_id(self) -> str:
        return self._tokens.tenant_id

    @property
    def client_id(self) -> str:
        return self._tokens.client_id

    @property
    def client_secret(self) -> str:
        return self._tokens._client_secret

    @property
    def dev_token(self) -> str:
        """A bearer token the emulator accepts as :attr:`client_id`'s, never expiring."""
        return self._tokens.dev_token

    @property
    def fault_seed(self) -> int:
        """The seed in use (chosen at random when the plan has none): replay with it."""
        return self._sequence.seed

    @property
    def tokens_issued(self) -> int:
        """Access tokens the token endpoint has issued."""
        return self._tokens.issued

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate (PEM) to trust; only with ``tls=True``."""
        return self._require_tls().ca_pem

    @property
    def ca_file(self) -> str:
        """Path of a PEM file with the CA, for azure-identity's ``connection_verify=``."""
        return self._require_tls().ca_file

    def client_ssl_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` that trusts the emulator's CA (for aiohttp connectors)."""
        return self._require_tls().client_context()

    def credential(self) -> StaticTokenCredential:
        """A credential whose token (:attr:`dev_token`) the emulator accepts."""
        return StaticTokenCredential(self.dev_token)

    def _require_tls(self) -> TlsMaterial:
        if self._tls is None:
            raise RuntimeError(
                "TLS material exists only with StoreEmulator(tls=True), once started"
            )
        return self._tls

    # -- tokens and keys -----------------------------------------------------------------

    def mint_access_token(
        self,
        *,
        client_id: str | None = None,
        appid: bool = True,
        audience: str = STORE_AUDIENCE,
        lifetime: float | None = None,
    ) -> str:
        """An access token as the token endpoint would issue (for :attr:`client_id` unless
        given; ``appid=False`` leaves the claim out; ``lifetime`` may be <= 0: expired)."""
        owner = (client_id or self.client_id) if appid else None
        return self._tokens.mint(client_id=owner, audience=audience, lifetime=lifetime)

    def expire_tokens(self) -> int:
        """Expire every issued access token (not :attr:`dev_token`), to test refresh."""
        return self._tokens.expire_all()

    def mint_store_id_key(
        self,
        user_id: str,
        kind: Literal["collections", "purchase"] = "collections",
        *,
        client_id: str | None = None,
        publisher_user_id: str | None = None,
        issued_at: float | None = None,
        lifetime: float | None = None,
    ) -> str:
        """A Store ID key for ``user_id`` signed by this emulator. ``issued_at`` (epoch
        seconds) in the past and a short ``lifetime`` make expired keys; another
        ``client_id`` makes keys that fail with ``InconsistentClientId``."""
        return self._keys.mint(
            user_id,
            kind,
            client_id=client_id or self.client_id,
            publisher_user_id=publisher_user_id,
            issued_at=issued_at,
            lifetime=lifetime,
        )

    def revoke_store_id_key(self, key: str) -> None:
        """Refuse this key from now on (the service may revoke keys before they expire)."""
        self._keys.revoke(key)

    def __repr__(self) -> str:
        where = self._url or "not started"
        return f"StoreEmulator({where}, faults={self.faults.rate_for('consume')})"


def _fixed_latency(seconds: float) -> Any:
    """A middleware that answers every request but the control plane's ``seconds`` late."""

    @web.middleware
    async def delay(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_emulator"):
            await asyncio.sleep(seconds)
        response: web.StreamResponse = await handler(request)
        return response

    return delay
