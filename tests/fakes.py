"""In-memory doubles of the domain ports, for fast tests of the services.

They follow the ports in ``arcana.domain`` (``ports.py``, ``users.py``, ``products.py``,
``delivery.py``), not the SQL adapters: each repository returns copies, so a service sees its
changes only through the store, as it would through a database. ``InMemoryUnitOfWork`` rolls
back unless committed, and only a commit publishes the events and jobs it recorded. Time is a
``FakeClock`` that a test moves by hand: nothing here sleeps or reads the real clock.

Transactions are not isolated from each other (a rollback restores the snapshot taken when the
unit of work began), so tests run one use case at a time; concurrency is the integration
tests' business.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from arcana.domain.audit import AuditEvent
from arcana.domain.events import DomainEvent
from arcana.domain.identity import IssuedToken, Principal
from arcana.domain.jobs import JobRequest
from arcana.domain.products import STOCK_MAX, Product, ProductQuery
from arcana.domain.users import RefreshToken, ResetToken, Session, SyncStatus, User
from arcana.errors import Conflict, Unauthorized


class FakeClock:
    """A ``Clock`` that stands still until ``advance`` moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


# -- storage -----------------------------------------------------------------------------------
@dataclass
class InMemoryStore:
    """What a database would hold, plus what commits handed to the outbox."""

    users: dict[str, User] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    reset_tokens: dict[str, ResetToken] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    events: list[DomainEvent] = field(default_factory=list)
    """Committed events, in commit order (the outbox)."""
    jobs: list[JobRequest] = field(default_factory=list)
    """Jobs enqueued through committed units of work."""
    commits: int = 0

    def events_of(self, *event_types: str) -> list[DomainEvent]:
        return [e for e in self.events if e.event_type in event_types]


class InMemoryUserRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    async def add(self, user: User) -> None:
        if any(u.email == user.email for u in self._store.users.values()):
            raise Conflict("A user with this email already exists")
        self._store.users[user.id] = replace(user)

    async def get(self, user_id: str) -> User | None:
        user = self._store.users.get(user_id)
        return replace(user) if user is not None else None

    async def get_with_session_state(
        self, user_id: str, session_id: str | None
    ) -> tuple[User, bool] | None:
        user = await self.get(user_id)
        if user is None:
            return None
        session = self._store.sessions.get(session_id) if session_id is not None else None
        ended = (
            session is not None and session.user_id == user_id and session.revoked_at is not None
        )
        return user, ended

    async def delete(self, user_id: str) -> bool:
        if self._store.users.pop(user_id, None) is None:
            return False
        for sid in [s.id for s in self._store.sessions.values() if s.user_id == user_id]:
            del self._store.sessions[sid]
        for table in (self._store.refresh_tokens, self._store.reset_tokens):
            for tid in [t.id for t in table.values() if t.user_id == user_id]:
                del table[tid]
        return True

    async def get_by_email(self, email: str) -> User | None:
        for user in self._store.users.values():
            if user.email == email:
                return replace(user)
        return None

    async def list_all(self, limit: int = 1000, offset: int = 0) -> list[User]:
        ordered = sorted(self._store.users.values(), key=lambda u: (u.created_at, u.id))
        return [replace(u) for u in ordered[offset : offset + limit]]

    async def list_with_role(self, role: str) -> list[User]:
        return [replace(u) for u in await self.list_all() if role in u.roles]

    async def set_password(self, user_id: str, password_hash: str, now: datetime) -> None:
        if user := self._store.users.get(user_id):
            user.password_hash, user.updated_at = password_hash, now

    async def set_roles(self, user_id: str, roles: frozenset[str], now: datetime) -> None:
        if user := self._store.users.get(user_id):
            user.roles, user.updated_at = frozenset(roles), now

    async def bump_generation(self, user_id: str, now: datetime) -> int | None:
        user = self._store.users.get(user_id)
        if user is None:
            return None
        user.generation += 1
        user.updated_at = now
        return user.generation

    async def generation(self, user_id: str) -> int | None:
        user = self._store.users.get(user_id)
        return user.generation if user is not None else None

    async def list_by_sync_status(self, status: SyncStatus, limit: int) -> list[User]:
        return [u for u in await self.list_all() if u.sync_status is status][:limit]

    async def set_sync_status(self, user_id: str, status: SyncStatus, now: datetime) -> None:
        if user := self._store.users.get(user_id):
            user.sync_status = status


class InMemorySessionRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    async def add_session(self, session: Session) -> None:
        self._store.sessions[session.id] = replace(session)

    async def add_session_if_generation(self, session: Session, generation: int) -> bool:
        user = self._store.users.get(session.user_id)
        if user is None or user.generation != generation:
            return False
        await self.add_session(session)
        return True

    async def last_rotated_token_id(self, session_id: str) -> str | None:
        rotated = [
            t
            for t in self._store.refresh_tokens.values()  # insertion order = issue order
            if t.session_id == session_id and t.revoked_at is not None
        ]
        return rotated[-1].id if rotated else None

    async def recently_revoked(self, user_id: str, since: datetime, limit: int) -> list[str]:
        ended = [
            s
            for s in self._store.sessions.values()
            if s.user_id == user_id and s.revoked_at is not None and s.revoked_at >= since
        ]
        ended.sort(key=lambda s: s.revoked_at or since, reverse=True)
        return [s.id for s in ended[:limit]]

    async def get_session(self, session_id: str) -> Session | None:
        session = self._store.sessions.get(session_id)
        return replace(session) if session is not None else None

    async def list_live_sessions(
        self, user_id: str, now: datetime, idle_seconds: int
    ) -> list[Session]:
        live = [
            replace(s)
            for s in self._store.sessions.values()
            if s.user_id == user_id and s.is_live(now, idle_seconds)
        ]
        live.sort(key=lambda s: s.id)
        live.sort(key=lambda s: s.last_used_at, reverse=True)
        return live

    async def touch_session(self, session_id: str, now: datetime) -> None:
        if session := self._store.sessions.get(session_id):
            session.last_used_at = now

    def _revoke_tokens(self, now: datetime, **match: str) -> None:
        for token in self._store.refresh_tokens.values():
            if token.revoked_at is None and all(getattr(token, k) == v for k, v in match.items()):
                token.revoked_at = now

    async def revoke_session(self, session_id: str, now: datetime) -> bool:
        session = self._store.sessions.get(session_id)
        was_live = session is not None and session.revoked_at is None
        if session is not None and was_live:
            session.revoked_at = now
        self._revoke_tokens(now, session_id=session_id)
        return was_live

    async def revoke_all_sessions(self, user_id: str, now: datetime) -> int:
        n = 0
        for session in self._store.sessions.values():
            if session.user_id == user_id and session.revoked_at is None:
                session.revoked_at = now
                n += 1
        self._revoke_tokens(now, user_id=user_id)
        return n

    async def add_token(self, token: RefreshToken) -> None:
        self._store.refresh_tokens[token.id] = replace(token)

    async def get_token_by_hash(self, token_hash: str) -> RefreshToken | None:
        for token in self._store.refresh_tokens.values():
            if token.token_hash == token_hash:
                return replace(token)
        return None

    async def consume_token(self, token_id: str, now: datetime) -> bool:
        token = self._store.refresh_tokens.get(token_id)
        if token is None or token.revoked_at is not None:
            return False
        token.revoked_at = now
        return True

    async def delete_dead(
        self, now: datetime, idle_seconds: int, batch_size: int, keep_revoked_seconds: int = 0
    ) -> int:
        dead = [
            s.id
            for s in self._store.sessions.values()
            if (
                s.revoked_at is not None
                and s.revoked_at <= now - timedelta(seconds=keep_revoked_seconds)
            )
            or s.expires_at <= now
            or s.last_used_at <= now - timedelta(seconds=idle_seconds)
        ][:batch_size]
        tokens = [t.id for t in self._store.refresh_tokens.values() if t.session_id in dead]
        for tid in tokens:
            del self._store.refresh_tokens[tid]
        for sid in dead:
            del self._store.sessions[sid]
        return len(tokens) + len(dead)


class InMemoryResetTokenRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    async def add(self, token: ResetToken) -> None:
        self._store.reset_tokens[token.id] = replace(token)

    async def get_by_hash(self, token_hash: str) -> ResetToken | None:
        for token in self._store.reset_tokens.values():
            if token.token_hash == token_hash:
                return replace(token)
        return None

    async def use(self, token_id: str, now: datetime) -> bool:
        token = self._store.reset_tokens.get(token_id)
        if token is None or token.used_at is not None or token.expires_at <= now:
            return False
        token.used_at = now
        return True

    async def invalidate_for_user(self, user_id: str, now: datetime) -> None:
        for token in self._store.reset_tokens.values():
            if token.user_id == user_id and token.used_at is None:
                token.used_at = now

    async def delete_dead(self, now: datetime, batch_size: int) -> int:
        dead = [
            t.id
            for t in self._store.reset_tokens.values()
            if t.used_at is not None or t.expires_at <= now
        ][:batch_size]
        for tid in dead:
            del self._store.reset_tokens[tid]
        return len(dead)


def _list_order(p: Product) -> tuple[datetime, str]:
    return (p.created_at, p.id)


class InMemoryProductRepository:
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.reads = 0
        """Loads of one product: how a test sees whether a read was served by the cache."""

    async def add(self, product: Product) -> None:
        self._store.products[product.id] = product

    async def add_many(self, products: Sequence[Product]) -> None:
        for product in products:
            await self.add(product)

    async def get(self, product_id: str) -> Product | None:
        self.reads += 1
        return self._store.products.get(product_id)

    async def get_for_update(self, product_id: str) -> Product | None:
        return await self.get(product_id)

    async def save(self, product: Product) -> None:
        self._store.products[product.id] = product

    async def delete(self, product_id: str) -> bool:
        return self._store.products.pop(product_id, None) is not None

    async def adjust_stock(self, product_id: str, delta: int, now: datetime) -> Product | None:
        product = self._store.products.get(product_id)
        if product is None or not 0 <= product.stock + delta <= STOCK_MAX:
            return None
        product = replace(product, stock=product.stock + delta, updated_at=now)
        self._store.products[product_id] = product
        return product

    async def exists(self, product_id: str) -> bool:
        return product_id in self._store.products

    async def page(
        self, query: ProductQuery, with_total: bool = True
    ) -> tuple[list[Product], int | None]:
        matching = sorted(
            (
                p
                for p in self._store.products.values()
                if (query.category is None or p.category == query.category)
                and (query.status is None or p.status is query.status)
            ),
            key=_list_order,
            reverse=True,
        )
        start = query.page * query.size
        return matching[start : start + query.size], len(matching) if with_total else None

    async def batch_after(self, after: tuple[datetime, str] | None, limit: int) -> list[Product]:
        ordered = sorted(self._store.products.values(), key=_list_order, reverse=True)
        if after is not None:
            ordered = [p for p in ordered if _list_order(p) < after]
        return ordered[:limit]


class InMemoryUnitOfWork:
    """One transaction over an ``InMemoryStore``; serves the auth and the catalog ports."""

    def __init__(self, store: InMemoryStore, products: InMemoryProductRepository) -> None:
        self._store = store
        self.users = InMemoryUserRepository(store)
        self.sessions = InMemorySessionRepository(store)
        self.reset_tokens = InMemoryResetTokenRepository(store)
        self.products = products
        self._events: list[DomainEvent] = []
        self._jobs: list[JobRequest] = []
        self._snapshot: InMemoryStore | None = None
        self.committed = False

    async def __aenter__(self) -> Self:
        self._snapshot = copy.deepcopy(
            replace(self._store, events=[], jobs=[])  # the outbox only grows by commits
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.committed:
            await self.rollback()

    def record(self, *events: DomainEvent) -> None:
        self._events.extend(events)

    def enqueue(self, *jobs: JobRequest) -> None:
        self._jobs.extend(jobs)

    async def write_recorded(self) -> None:
        """Nothing to write early: recorded events reach the store with the commit, and a
        rollback drops them, as it drops rows written early in a SQL transaction."""

    async def commit(self) -> None:
        self._store.events.extend(self._events)
        self._store.jobs.extend(self._jobs)
        self._store.commits += 1
        self._events, self._jobs = [], []
        self.committed = True
        self._snapshot = copy.deepcopy(replace(self._store, events=[], jobs=[]))

    async def rollback(self) -> None:
        self._events, self._jobs = [], []
        snapshot = self._snapshot
        if snapshot is None:
            return
        for name in ("users", "sessions", "refresh_tokens", "reset_tokens", "products"):
            setattr(self._store, name, getattr(snapshot, name))
        self._snapshot = copy.deepcopy(replace(self._store, events=[], jobs=[]))


class InMemoryUnitOfWorkFactory:
    """Called like the SQL unit-of-work factory; every unit shares one store."""

    def __init__(self, store: InMemoryStore | None = None) -> None:
        self.store = store or InMemoryStore()
        self.products = InMemoryProductRepository(self.store)

    def __call__(self) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self.store, self.products)


# -- cache and queue ---------------------------------------------------------------------------
class InMemoryCache:
    """The ``Cache`` port; entries expire by the fake clock. ``down`` makes every call a miss
    or a no-op, as a cache outage must be."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._data: dict[str, tuple[bytes, datetime]] = {}
        self.down = False

    def _live(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None or entry[1] <= self._clock.now():
            self._data.pop(key, None)
            return None
        return entry[0]

    async def get(self, key: str) -> bytes | None:
        return None if self.down else self._live(key)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        if not self.down:
            self._data[key] = (value, self._clock.now() + timedelta(seconds=ttl))

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        if self.down or self._live(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    async def delete(self, *keys: str) -> None:
        if not self.down:
            for key in keys:
                self._data.pop(key, None)

    async def ping(self) -> bool:
        return not self.down

    def keys(self) -> list[str]:
        return [k for k in list(self._data) if self._live(k) is not None]


class GatedCache(InMemoryCache):
    """Holds every ``set`` (the cache update after a commit) while ``gate`` is closed, and
    says so through ``waiting``: a test can cancel a caller between commit and cache update."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = asyncio.Event()

    def close_gate(self) -> None:
        self.gate.clear()
        self.waiting.clear()

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self.waiting.set()
        await self.gate.wait()
        await super().set(key, value, ttl)


class InMemoryJobQueue:
    """The ``JobEnqueuer`` port: one job per ``job_id``, as the real queues promise."""

    def __init__(self) -> None:
        self.jobs: dict[str, JobRequest] = {}
        self.calls = 0

    async def enqueue(self, request: JobRequest, *, job_id: str | None = None) -> str:
        self.calls += 1
        key = job_id or str(uuid.uuid4())
        self.jobs.setdefault(key, request)
        return key

    def of_type(self, job_type: str) -> list[JobRequest]:
        return [j for j in self.jobs.values() if j.job_type == job_type]


# -- auth collaborators ------------------------------------------------------------------------
class PlainPasswordHasher:
    """A ``PasswordHasher`` without the cost, counting verifications (the timing rule is that
    both login failures verify exactly once)."""

    PREFIX = "plain$"

    def __init__(self) -> None:
        self.verified: list[str] = []

    async def hash(self, password: str) -> str:
        return self.PREFIX + password

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash)
        return password_hash == self.PREFIX + password

    def needs_rehash(self, password_hash: str) -> bool:
        return False

    def dummy_hash(self) -> str:
        return "dummy$matches-nothing"


class InMemoryAccessTokens:
    """``AccessTokens`` as readable strings: ``at:<user>:<generation>:<session>:<n>``."""

    def __init__(self, clock: FakeClock, ttl: int = 900) -> None:
        self._clock = clock
        self._ttl = ttl
        self._issued: dict[str, Principal] = {}

    def issue(
        self, user_id: str, roles: frozenset[str], generation: int, session_id: str | None = None
    ) -> IssuedToken:
        token = f"at:{user_id}:{generation}:{session_id}:{len(self._issued)}"
        self._issued[token] = Principal(
            user_id=user_id,
            roles=frozenset(roles),
            token_id=token,
            issued_at=self._clock.now(),
            generation=generation,
            session_id=session_id,
        )
        return IssuedToken(token, self._ttl)

    def verify(self, token: str) -> Principal:
        principal = self._issued.get(token)
        if principal is None:
            raise Unauthorized("Invalid token")
        return principal


class CountingLoginLimiter:
    """A ``LoginLimiter`` that refuses an account after ``max_failures`` counted attempts; no
    clock (the window itself is the limiter adapters' business)."""

    def __init__(self, max_failures: int = 1000) -> None:
        self.max_failures = max_failures
        self.failures: dict[str, int] = {}

    async def reserve(self, account: str, address: str) -> int:
        if self.failures.get(account, 0) >= self.max_failures:
            return 60
        self.failures[account] = self.failures.get(account, 0) + 1
        return 0

    async def release(self, account: str, address: str) -> None:
        self.failures.pop(account, None)

    async def refund(self, account: str, address: str) -> None:
        self.failures[account] = max(self.failures.get(account, 0) - 1, 0)


class CountingQuota:
    """An ``AttemptQuota`` without windows: counts hits per (bucket, key) up to the limit."""

    def __init__(self) -> None:
        self.hits: dict[tuple[str, str], int] = {}

    async def hit(self, bucket: str, key: str, limit: int, window_seconds: int) -> int:
        n = self.hits.get((bucket, key), 0)
        if n >= limit:
            return window_seconds
        self.hits[(bucket, key)] = n + 1
        return 0


class ReversibleSealer:
    """A ``SecretSealer`` whose sealed form is visibly not the secret."""

    PREFIX = "sealed:"

    def seal(self, plaintext: str) -> str:
        return self.PREFIX + plaintext[::-1]

    def unseal(self, sealed: str) -> str:
        if not sealed.startswith(self.PREFIX):
            raise ValueError("not sealed by this key")
        return sealed[len(self.PREFIX) :][::-1]


class RecordingAuditSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def of_type(self, event_type: str) -> list[AuditEvent]:
        return [e for e in self.events if e.event_type == event_type]


class RecordingMailer:
    """The ``Mailer`` port: keeps what would have been sent, one mail per idempotency key as
    the file sender does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, object]]] = []
        self._keys: set[str] = set()

    async def send_template(
        self,
        template: str,
        to: str,
        context: Mapping[str, object],
        *,
        idempotency_key: str | None = None,
    ) -> None:
        if idempotency_key is not None:
            if idempotency_key in self._keys:
                return
            self._keys.add(idempotency_key)
        self.sent.append((template, to, dict(context)))
