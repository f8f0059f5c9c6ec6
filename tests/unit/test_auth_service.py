"""The auth use cases through in-memory ports: rotation, reuse detection, the grace window,
sessions, passwords. Time moves through a fake clock; nothing here sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest

from arcana.domain.identity import Principal
from arcana.domain.users import User
from arcana.errors import (
    Conflict,
    InvalidCredentials,
    NotFound,
    RateLimited,
    TokenExpired,
    ValidationFailed,
)
from arcana.services.auth import AuthPolicy, AuthService, ClientInfo, TokenPair, digest
from arcana.services.users import TokenGenerationCache, UserService
from tests.fakes import (
    CountingLoginLimiter,
    CountingQuota,
    FakeClock,
    GatedCache,
    InMemoryAccessTokens,
    InMemoryCache,
    InMemoryStore,
    InMemoryUnitOfWorkFactory,
    PlainPasswordHasher,
    RecordingAuditSink,
    ReversibleSealer,
)

PASSWORD = "Correct-Horse-9"
CLIENT = ClientInfo(ip="10.0.0.1", user_agent="unit")
GRACE = 2.0
IDLE = 3600
ABSOLUTE = 7 * 24 * 3600
ACCESS_TTL = 900


@dataclass
class Auth:
    service: AuthService
    users: UserService
    store: InMemoryStore
    clock: FakeClock
    hasher: PlainPasswordHasher
    tokens: InMemoryAccessTokens
    limiter: CountingLoginLimiter
    audit: RecordingAuditSink
    generations: TokenGenerationCache

    async def register(self, email: str = "ada@example.com") -> User:
        return await self.service.register("Ada", email, PASSWORD)

    async def login(self, email: str = "ada@example.com") -> TokenPair:
        return await self.service.login(email, PASSWORD, CLIENT)

    def principal(self, pair: TokenPair) -> Principal:
        return self.tokens.verify(pair.access_token)


def build(
    grace: float = GRACE,
    max_failures: int = 1000,
    absolute: int = ABSOLUTE,
    cache: type[InMemoryCache] = InMemoryCache,
) -> Auth:
    clock = FakeClock()
    uow = InMemoryUnitOfWorkFactory()
    hasher = PlainPasswordHasher()
    tokens = InMemoryAccessTokens(clock)
    generations = TokenGenerationCache(uow, cache(clock), ttl=ACCESS_TTL, clock=clock)
    users = UserService(uow, hasher, generations, clock=clock)
    limiter = CountingLoginLimiter(max_failures)
    audit = RecordingAuditSink()
    service = AuthService(
        uow,
        users,
        hasher,
        tokens,
        generations,
        limiter,
        audit,
        AuthPolicy(absolute, IDLE, 1800, grace, access_token_ttl=ACCESS_TTL),
        CountingQuota(),
        ReversibleSealer(),
        clock=clock,
    )
    return Auth(service, users, uow.store, clock, hasher, tokens, limiter, audit, generations)


@pytest.fixture
def auth() -> Auth:
    return build()


# -- registration and login ---------------------------------------------------------------------
async def test_register_records_the_event_in_the_same_commit(auth: Auth) -> None:
    user = await auth.register("  Ada@Example.com ")
    assert user.email == "ada@example.com"
    [event] = auth.store.events_of("auth.user_registered")
    assert event.data == {"userId": user.id, "email": "ada@example.com", "name": "Ada"}
    with pytest.raises(Conflict):
        await auth.register("ada@example.com")
    assert len(auth.store.events_of("auth.user_registered")) == 1
    assert len(auth.store.users) == 1


async def test_register_refuses_an_empty_name_before_storing(auth: Auth) -> None:
    with pytest.raises(ValidationFailed):
        await auth.service.register("   ", "x@example.com", PASSWORD)
    assert auth.store.users == {}
    assert auth.store.events == []


async def test_both_login_failures_cost_one_verification(auth: Auth) -> None:
    """No user enumeration by timing: an unknown email is checked against the dummy hash,
    exactly once, like a wrong password against the real one."""
    await auth.register()
    with pytest.raises(InvalidCredentials):
        await auth.service.login("ada@example.com", "Wrong-Password-1", CLIENT)
    with pytest.raises(InvalidCredentials):
        await auth.service.login("nobody@example.com", "Wrong-Password-1", CLIENT)
    assert auth.hasher.verified == [await auth.hasher.hash(PASSWORD), auth.hasher.dummy_hash()]
    failed = auth.audit.of_type("user.login_failed")
    assert [e.metadata["email"] for e in failed] == ["ada@example.com", "nobody@example.com"]
    assert auth.limiter.failures == {"ada@example.com": 1, "nobody@example.com": 1}


async def test_a_locked_account_is_refused_before_any_verification() -> None:
    auth = build(max_failures=1)
    await auth.register()
    with pytest.raises(InvalidCredentials):
        await auth.service.login("ada@example.com", "Wrong-Password-1", CLIENT)
    with pytest.raises(RateLimited):
        await auth.login()
    assert len(auth.hasher.verified) == 1


async def test_login_opens_a_session_with_one_refresh_token(auth: Auth) -> None:
    user = await auth.register()
    pair = await auth.login()
    principal = auth.principal(pair)
    assert principal.user_id == user.id
    [session] = auth.store.sessions.values()
    assert principal.session_id == session.id
    assert session.expires_at == auth.clock.now() + timedelta(seconds=ABSOLUTE)
    [token] = auth.store.refresh_tokens.values()
    # Only the digest rests in storage.
    assert token.token_hash == digest(pair.refresh_token) != pair.refresh_token
    assert [e.event_type for e in auth.audit.events] == ["user.login"]


# -- refresh rotation and reuse ---------------------------------------------------------------
async def test_refresh_rotates_within_the_same_session(auth: Auth) -> None:
    await auth.register()
    first = await auth.login()
    auth.clock.advance(60)
    second = await auth.service.refresh(first.refresh_token, CLIENT)
    assert second.refresh_token != first.refresh_token
    assert auth.principal(second).session_id == auth.principal(first).session_id
    old = auth.store.refresh_tokens
    assert {t.token_hash: t.revoked_at for t in old.values()} == {
        digest(first.refresh_token): auth.clock.now(),
        digest(second.refresh_token): None,
    }
    [session] = auth.store.sessions.values()
    assert session.last_used_at == auth.clock.now()  # rotation keeps the session awake


async def test_reuse_after_the_grace_window_ends_that_session_only(auth: Auth) -> None:
    await auth.register()
    stolen = await auth.login()
    other = await auth.login()
    rotated = await auth.service.refresh(stolen.refresh_token, CLIENT)
    auth.clock.advance(GRACE + 0.001)
    with pytest.raises(TokenExpired):
        await auth.service.refresh(stolen.refresh_token, CLIENT)
    # The whole family ended: the newest token of the stolen session is dead too …
    with pytest.raises(TokenExpired):
        await auth.service.refresh(rotated.refresh_token, CLIENT)
    ended = auth.store.sessions[auth.principal(stolen).session_id or ""]
    assert ended.revoked_at == auth.clock.now()
    # … and the other session lives on.
    await auth.service.refresh(other.refresh_token, CLIENT)


async def test_inside_the_grace_window_a_replay_is_a_lost_race(auth: Auth) -> None:
    await auth.register()
    pair = await auth.login()
    rotated = await auth.service.refresh(pair.refresh_token, CLIENT)
    auth.clock.advance(GRACE - 0.001)
    with pytest.raises(TokenExpired, match="already used"):
        await auth.service.refresh(pair.refresh_token, CLIENT)
    [session] = auth.store.sessions.values()
    assert session.revoked_at is None
    await auth.service.refresh(rotated.refresh_token, CLIENT)


async def test_the_window_is_counted_from_the_rotation() -> None:
    """A replay exactly ``grace`` after the rotation is already reuse."""
    auth = build(grace=5.0)
    await auth.register()
    pair = await auth.login()
    await auth.service.refresh(pair.refresh_token, CLIENT)
    auth.clock.advance(5.0)
    with pytest.raises(TokenExpired, match="revoked"):
        await auth.service.refresh(pair.refresh_token, CLIENT)
    [session] = auth.store.sessions.values()
    assert session.revoked_at is not None


async def test_with_no_grace_window_every_replay_is_reuse() -> None:
    auth = build(grace=0)
    await auth.register()
    pair = await auth.login()
    rotated = await auth.service.refresh(pair.refresh_token, CLIENT)
    with pytest.raises(TokenExpired):
        await auth.service.refresh(pair.refresh_token, CLIENT)
    with pytest.raises(TokenExpired):
        await auth.service.refresh(rotated.refresh_token, CLIENT)


async def test_refresh_ends_at_the_idle_timeout_and_the_absolute_lifetime() -> None:
    auth = build(absolute=3 * IDLE + 100)
    await auth.register()
    idle = await auth.login()
    auth.clock.advance(IDLE)
    with pytest.raises(TokenExpired, match="expired"):
        await auth.service.refresh(idle.refresh_token, CLIENT)

    pair = await auth.login()
    # Refreshing more often than the idle timeout keeps a session only up to its absolute end.
    for _ in range(3):
        auth.clock.advance(IDLE - 1)
        pair = await auth.service.refresh(pair.refresh_token, CLIENT)
    auth.clock.advance(104)
    with pytest.raises(TokenExpired, match="expired"):
        await auth.service.refresh(pair.refresh_token, CLIENT)


async def test_unknown_refresh_tokens_change_nothing(auth: Auth) -> None:
    await auth.register()
    await auth.login()
    commits = auth.store.commits
    with pytest.raises(TokenExpired, match="Unknown"):
        await auth.service.refresh("not-a-token", CLIENT)
    assert auth.store.commits == commits


# -- sessions -------------------------------------------------------------------------------
async def test_sessions_list_the_live_ones_and_mark_the_caller(auth: Auth) -> None:
    await auth.register()
    first = await auth.login()
    auth.clock.advance(1)
    second = await auth.login()
    me = auth.principal(second)
    views = await auth.service.list_sessions(me)
    assert [(v.session.id, v.current) for v in views] == [
        (me.session_id, True),
        (auth.principal(first).session_id, False),
    ]
    auth.clock.advance(IDLE - 0.5)  # the first went idle, the second not yet
    views = await auth.service.list_sessions(me)
    assert [v.session.id for v in views] == [me.session_id]


async def test_ending_a_session_kills_its_refresh_token(auth: Auth) -> None:
    await auth.register()
    first = await auth.login()
    second = await auth.login()
    first_id = auth.principal(first).session_id or ""
    await auth.service.end_session(auth.principal(second), first_id)
    with pytest.raises(TokenExpired):
        await auth.service.refresh(first.refresh_token, CLIENT)
    with pytest.raises(NotFound):  # already ended
        await auth.service.end_session(auth.principal(second), first_id)
    await auth.service.refresh(second.refresh_token, CLIENT)


async def test_an_ended_session_is_listed_as_revoked_for_one_access_token_lifetime(
    auth: Auth,
) -> None:
    """Its access tokens die at once; the entry goes once none of them can still be valid.
    The window is read from the services' clock (a miss reloads it from the store)."""
    user = await auth.register()
    first, second = await auth.login(), await auth.login()
    first_id = auth.principal(first).session_id or ""
    await auth.service.end_session(auth.principal(second), first_id)

    async def revoked() -> frozenset[str]:
        await auth.generations.refresh(user.id)
        state = await auth.generations.state(user.id)
        assert state is not None
        return state.revoked_sessions

    assert first_id in await revoked()
    auth.clock.advance(ACCESS_TTL - 1)
    assert first_id in await revoked()
    auth.clock.advance(2)
    assert first_id not in await revoked()


async def test_a_session_of_someone_else_is_not_found(auth: Auth) -> None:
    await auth.register("ada@example.com")
    await auth.register("bob@example.com")
    ada = await auth.login("ada@example.com")
    bob = await auth.login("bob@example.com")
    with pytest.raises(NotFound):
        await auth.service.end_session(auth.principal(bob), auth.principal(ada).session_id or "")
    await auth.service.refresh(ada.refresh_token, CLIENT)


async def test_logout_all_ends_every_session_and_bumps_the_generation(auth: Auth) -> None:
    user = await auth.register()
    first, second = await auth.login(), await auth.login()
    assert await auth.generations.current(user.id) == 0
    await auth.service.logout_all(auth.principal(first))
    assert await auth.generations.current(user.id) == 1  # the cache saw the bump at once
    for pair in (first, second):
        with pytest.raises(TokenExpired):
            await auth.service.refresh(pair.refresh_token, CLIENT)


async def test_logout_all_cancelled_after_its_commit_still_revokes_cached_tokens() -> None:
    auth = build(cache=GatedCache)
    cache = auth.generations._cache
    assert isinstance(cache, GatedCache)
    user = await auth.register()
    pair = await auth.login()
    assert await auth.generations.current(user.id) == 0  # cached: tokens of generation 0 pass
    cache.close_gate()
    # The client hangs up once the revocation is committed and the cache update is under way.
    caller = asyncio.create_task(auth.service.logout_all(auth.principal(pair)))
    await asyncio.wait_for(cache.waiting.wait(), 5)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    cache.gate.set()
    async with asyncio.timeout(5):
        while await auth.generations.current(user.id) != 1:  # the write finishes its update
            await asyncio.sleep(0.01)


async def test_cleanup_deletes_ended_sessions_and_keeps_rotated_tokens_of_live_ones(
    auth: Auth,
) -> None:
    await auth.register()
    live = await auth.login()
    ended = await auth.login()
    await auth.service.refresh(live.refresh_token, CLIENT)
    await auth.service.logout(ended.refresh_token)
    # An ended session is kept for an access-token lifetime: it is what kills its tokens.
    assert await auth.service.cleanup_tokens() == 0
    auth.clock.advance(ACCESS_TTL)
    assert await auth.service.cleanup_tokens() == 2  # the ended session and its one token
    assert len(auth.store.sessions) == 1
    assert len(auth.store.refresh_tokens) == 2  # rotated + current: reuse stays detectable


# -- passwords ------------------------------------------------------------------------------
async def _reset_token(auth: Auth, email: str = "ada@example.com") -> str:
    """Forgot-password queues a request; its job issues the token and queues the mail."""
    await auth.service.forgot_password(email, CLIENT)
    request = auth.store.jobs[-1]
    assert (request.job_type, request.payload) == ("auth.password_reset_request", {"email": email})
    await auth.service.issue_reset(request.payload["email"])
    mail = auth.store.jobs[-1]
    assert mail.job_type == "email.password_reset"
    return ReversibleSealer().unseal(mail.payload["reset_token"])


async def test_forgot_password_mails_only_a_known_address_and_seals_the_token(
    auth: Auth,
) -> None:
    await auth.service.forgot_password("nobody@example.com", CLIENT)
    [request] = auth.store.jobs
    await auth.service.issue_reset(request.payload["email"])
    assert auth.store.jobs == [request]  # same answer, no mail
    await auth.register()
    raw = await _reset_token(auth, "ada@example.com")
    mail = auth.store.jobs[-1]
    assert mail.payload["email"] == "ada@example.com"
    assert raw not in str(mail.payload)  # only the sealed form rests in the job
    [stored] = auth.store.reset_tokens.values()
    assert stored.token_hash == digest(raw)


async def test_a_reset_token_expires_by_the_clock(auth: Auth) -> None:
    await auth.register()
    token = await _reset_token(auth)
    auth.clock.advance(1800)
    with pytest.raises(TokenExpired):
        await auth.service.reset_password(token, "Another-Horse-10")


async def test_reset_password_ends_sessions_and_records_the_change(auth: Auth) -> None:
    user = await auth.register()
    pair = await auth.login()
    token = await _reset_token(auth)
    with pytest.raises(ValidationFailed):  # rules checked after the token; the token survives
        await auth.service.reset_password(token, "short")
    await auth.service.reset_password(token, "Another-Horse-10")
    with pytest.raises(TokenExpired):  # single use
        await auth.service.reset_password(token, "Third-Horse-11")
    with pytest.raises(TokenExpired):
        await auth.service.refresh(pair.refresh_token, CLIENT)
    [event] = auth.store.events_of("auth.password_changed")
    assert event.data == {"userId": user.id}
    assert await auth.generations.current(user.id) == 1
    await auth.service.login("ada@example.com", "Another-Horse-10", CLIENT)


async def test_a_wrong_current_password_counts_as_a_failed_login(auth: Auth) -> None:
    await auth.register()
    me = auth.principal(await auth.login())
    with pytest.raises(InvalidCredentials):
        await auth.service.change_password(me, "Wrong-Password-1", "Another-Horse-10", CLIENT)
    assert auth.limiter.failures == {"ada@example.com": 1}
    assert auth.store.events_of("auth.password_changed") == []
