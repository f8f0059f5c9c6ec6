"""SQL repositories of the auth area: users, sessions with their refresh tokens, reset tokens.

Every state change that must happen once (rotating a refresh token, using a reset token) is a
conditional ``UPDATE … WHERE <still valid>`` whose row count says who won, so concurrent
requests cannot both succeed on either PostgreSQL or SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from arcana import tracing
from arcana.adapters.database import Database, translate_error
from arcana.adapters.driver_statements import (
    DriverStatement,
    execute_count,
    sqlite_driver,
    sqlite_execute,
)
from arcana.adapters.group_commit import SqliteGroupCommit
from arcana.adapters.tables import auth_sessions, password_reset_tokens, refresh_tokens, users
from arcana.domain.users import (
    AuthUnitOfWork,
    RefreshToken,
    ResetToken,
    Session,
    SyncStatus,
    User,
)
from arcana.errors import Conflict


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back naive; they were written as UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _aware_opt(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _roles_text(roles: frozenset[str]) -> str:
    return ",".join(sorted(roles))


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


# Built once: every login looks a user up by email, and building the expression costs more
# than SQLAlchemy's compiled-statement cache saves on it.
_BY_EMAIL = select(users).where(users.c.email == bindparam("email"))


def _user(row: Any) -> User:
    return _user_of(row._mapping)


def _user_of(row: Mapping[str, Any]) -> User:
    """A ``User`` from a row's columns by name (a SQLAlchemy row mapping or a driver record)."""
    return User(
        id=row["id"],
        name=row["name"],
        email=row["email"],
        password_hash=row["password_hash"],
        roles=frozenset(r for r in row["roles"].split(",") if r),
        generation=int(row["generation"]),
        sync_status=SyncStatus(row["sync_status"]),
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
    )


# Built once: the bearer check runs them on every ``/auth/me``, and a statement object built
# per call costs its construction and its cache-key walk each time (SQLAlchemy memoizes the
# key per object).
_USER_BY_ID = select(users).where(users.c.id == bindparam("user_id"))
_USER_AND_SESSION_ENDED = select(
    users,
    exists()
    .where(
        auth_sessions.c.id == bindparam("session_id"),
        auth_sessions.c.user_id == users.c.id,
        auth_sessions.c.revoked_at.is_not(None),
    )
    .label("session_ended"),
).where(users.c.id == bindparam("user_id"))


class SqlUserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def add(self, user: User) -> None:
        # A unique violation aborts the transaction; the caller's unit of work rolls it back.
        try:
            await self._s.execute(
                insert(users).values(
                    id=user.id,
                    name=user.name,
                    email=user.email,
                    password_hash=user.password_hash,
                    roles=_roles_text(user.roles),
                    generation=user.generation,
                    sync_status=user.sync_status.value,
                    created_at=user.created_at,
                    updated_at=user.updated_at,
                )
            )
        except IntegrityError:
            raise Conflict("A user with this email already exists") from None

    async def get(self, user_id: str) -> User | None:
        row = (await self._s.execute(select(users).where(users.c.id == user_id))).first()
        return _user(row) if row else None

    async def _first(self, statement: Any, params: dict[str, Any]) -> Mapping[str, Any] | None:
        """The first row of a statement built once, by column name. In a read-only unit of
        work it runs on the driver directly (``AutocommitReads.first_row`` on PostgreSQL,
        ``SqliteReads.first_row`` on a SQLite file): the hot reads (the bearer's user, a
        login's look-up) skip SQLAlchemy's execution."""
        first_row = getattr(self._s, "first_row", None)
        if first_row is not None:
            found: Mapping[str, Any] | None = await first_row(statement, params)
            return found
        row = (await self._s.execute(statement, params)).first()
        return None if row is None else cast(Mapping[str, Any], row._mapping)

    async def get_with_session_state(
        self, user_id: str, session_id: str | None
    ) -> tuple[User, bool] | None:
        if session_id is None:
            found = await self._first(_USER_BY_ID, {"user_id": user_id})
            return None if found is None else (_user_of(found), False)
        params = {"user_id": user_id, "session_id": session_id}
        found = await self._first(_USER_AND_SESSION_ENDED, params)
        return None if found is None else (_user_of(found), bool(found["session_ended"]))

    async def delete(self, user_id: str) -> bool:
        # Sessions and reset tokens cascade; refresh tokens go with their session.
        await self._s.execute(delete(refresh_tokens).where(refresh_tokens.c.user_id == user_id))
        await self._s.execute(delete(auth_sessions).where(auth_sessions.c.user_id == user_id))
        await self._s.execute(
            delete(password_reset_tokens).where(password_reset_tokens.c.user_id == user_id)
        )
        result = await self._s.execute(delete(users).where(users.c.id == user_id))
        return bool(getattr(result, "rowcount", 0))

    async def get_by_email(self, email: str) -> User | None:
        found = await self._first(_BY_EMAIL, {"email": email})
        return None if found is None else _user_of(found)

    async def list_all(self, limit: int = 1000, offset: int = 0) -> list[User]:
        rows = await self._s.execute(
            select(users).order_by(users.c.created_at, users.c.id).limit(limit).offset(offset)
        )
        return [_user(r) for r in rows]

    async def search(self, text: str | None, limit: int, offset: int) -> tuple[list[User], int]:
        where = []
        if text:
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", text.lower()) + "%"
            where.append(
                or_(
                    func.lower(users.c.name).like(pattern, escape="\\"),
                    users.c.email.like(pattern, escape="\\"),
                )
            )
        rows = await self._s.execute(
            select(users)
            .where(*where)
            .order_by(users.c.created_at.desc(), users.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        total = (
            await self._s.execute(select(func.count()).select_from(users).where(*where))
        ).scalar_one()
        return [_user(r) for r in rows], int(total)

    async def list_with_role(self, role: str) -> list[User]:
        # Roles are stored comma-separated; framing both sides with commas matches whole names.
        framed = literal(",") + users.c.roles + literal(",")
        rows = await self._s.execute(
            select(users).where(framed.like(f"%,{role},%")).order_by(users.c.created_at)
        )
        return [_user(r) for r in rows]

    async def set_password(self, user_id: str, password_hash: str, now: datetime) -> None:
        await self._s.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(password_hash=password_hash, updated_at=now)
        )

    async def set_roles(self, user_id: str, roles: frozenset[str], now: datetime) -> None:
        await self._s.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(roles=_roles_text(roles), updated_at=now)
        )

    async def bump_generation(self, user_id: str, now: datetime) -> int | None:
        result = await self._s.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(generation=users.c.generation + 1, updated_at=now)
            .returning(users.c.generation)
        )
        value = result.scalar_one_or_none()
        return None if value is None else int(value)

    async def generation(self, user_id: str) -> int | None:
        value = (
            await self._s.execute(select(users.c.generation).where(users.c.id == user_id))
        ).scalar_one_or_none()
        return None if value is None else int(value)

    async def list_by_sync_status(self, status: SyncStatus, limit: int) -> list[User]:
        rows = await self._s.execute(
            select(users)
            .where(users.c.sync_status == status.value)
            .order_by(users.c.created_at)
            .limit(limit)
        )
        return [_user(r) for r in rows]

    async def set_sync_status(self, user_id: str, status: SyncStatus, now: datetime) -> None:
        await self._s.execute(
            update(users).where(users.c.id == user_id).values(sync_status=status.value)
        )


def _session(row: Any) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        created_at=_aware(row.created_at),
        last_used_at=_aware(row.last_used_at),
        expires_at=_aware(row.expires_at),
        user_agent=row.user_agent,
        ip=row.ip,
        revoked_at=_aware_opt(row.revoked_at),
    )


class SqlSessionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def add_session(self, session: Session) -> None:
        await self._s.execute(
            insert(auth_sessions).values(
                id=session.id,
                user_id=session.user_id,
                created_at=session.created_at,
                last_used_at=session.last_used_at,
                expires_at=session.expires_at,
                user_agent=session.user_agent,
                ip=session.ip,
                revoked_at=session.revoked_at,
            )
        )

    async def add_session_if_generation(self, session: Session, generation: int) -> bool:
        """Insert the session only while the user's token generation is still ``generation``.

        PostgreSQL: the user row is share-locked first, so a password reset or change (which
        updates that row) either committed before (the row no longer matches: no session) or
        waits until this transaction commits and then revokes the new session too. SQLite: the
        ``INSERT … SELECT … WHERE generation = :g`` runs under the database write lock, which
        a reset holds until its commit."""
        locked = await self._s.execute(
            select(users.c.id)
            .where(users.c.id == session.user_id, users.c.generation == generation)
            .with_for_update(read=True)
        )
        if locked.first() is None:
            return False
        result = await self._s.execute(_insert_session_if_generation(session, generation))
        return _rowcount(result) == 1

    async def last_rotated_token_id(self, session_id: str) -> str | None:
        row = (
            await self._s.execute(
                select(refresh_tokens.c.id)
                .where(
                    refresh_tokens.c.session_id == session_id,
                    refresh_tokens.c.revoked_at.is_not(None),
                )
                .order_by(refresh_tokens.c.created_at.desc(), refresh_tokens.c.revoked_at.desc())
                .limit(1)
            )
        ).first()
        return str(row[0]) if row else None

    async def recently_revoked(self, user_id: str, since: datetime, limit: int) -> list[str]:
        rows = await self._s.execute(
            select(auth_sessions.c.id)
            .where(auth_sessions.c.user_id == user_id, auth_sessions.c.revoked_at >= since)
            .order_by(auth_sessions.c.revoked_at.desc())
            .limit(limit)
        )
        return list(rows.scalars())

    async def get_session(self, session_id: str) -> Session | None:
        row = (
            await self._s.execute(select(auth_sessions).where(auth_sessions.c.id == session_id))
        ).first()
        return _session(row) if row else None

    async def list_live_sessions(
        self, user_id: str, now: datetime, idle_seconds: int
    ) -> list[Session]:
        rows = await self._s.execute(
            select(auth_sessions)
            .where(
                auth_sessions.c.user_id == user_id,
                auth_sessions.c.revoked_at.is_(None),
                auth_sessions.c.expires_at > now,
                auth_sessions.c.last_used_at > now - timedelta(seconds=idle_seconds),
            )
            .order_by(auth_sessions.c.last_used_at.desc(), auth_sessions.c.id)
        )
        return [_session(r) for r in rows]

    async def touch_session(self, session_id: str, now: datetime) -> None:
        await self._s.execute(
            update(auth_sessions).where(auth_sessions.c.id == session_id).values(last_used_at=now)
        )

    async def revoke_session(self, session_id: str, now: datetime) -> bool:
        result = await self._s.execute(
            update(auth_sessions)
            .where(auth_sessions.c.id == session_id, auth_sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await self._s.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.session_id == session_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return _rowcount(result) > 0

    async def revoke_all_sessions(self, user_id: str, now: datetime) -> int:
        result = await self._s.execute(
            update(auth_sessions)
            .where(auth_sessions.c.user_id == user_id, auth_sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await self._s.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return _rowcount(result)

    async def add_token(self, token: RefreshToken) -> None:
        await self._s.execute(_insert_token(token))

    async def get_token_by_hash(self, token_hash: str) -> RefreshToken | None:
        row = (
            await self._s.execute(
                select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
            )
        ).first()
        if row is None:
            return None
        return RefreshToken(
            id=row.id,
            session_id=row.session_id,
            user_id=row.user_id,
            token_hash=row.token_hash,
            created_at=_aware(row.created_at),
            revoked_at=_aware_opt(row.revoked_at),
        )

    async def consume_token(self, token_id: str, now: datetime) -> bool:
        result = await self._s.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.id == token_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return _rowcount(result) == 1

    async def delete_dead(
        self, now: datetime, idle_seconds: int, batch_size: int, keep_revoked_seconds: int = 0
    ) -> int:
        dead = (
            select(auth_sessions.c.id)
            .where(
                or_(
                    auth_sessions.c.revoked_at <= now - timedelta(seconds=keep_revoked_seconds),
                    auth_sessions.c.expires_at <= now,
                    auth_sessions.c.last_used_at <= now - timedelta(seconds=idle_seconds),
                )
            )
            .limit(batch_size)
        )
        ids = list((await self._s.execute(dead)).scalars())
        if not ids:
            return 0
        tokens = await self._s.execute(
            delete(refresh_tokens).where(refresh_tokens.c.session_id.in_(ids))
        )
        sessions = await self._s.execute(delete(auth_sessions).where(auth_sessions.c.id.in_(ids)))
        return _rowcount(tokens) + _rowcount(sessions)


class SqlResetTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def add(self, token: ResetToken) -> None:
        await self._s.execute(
            insert(password_reset_tokens).values(
                id=token.id,
                user_id=token.user_id,
                token_hash=token.token_hash,
                created_at=token.created_at,
                expires_at=token.expires_at,
                used_at=token.used_at,
            )
        )

    async def get_by_hash(self, token_hash: str) -> ResetToken | None:
        row = (
            await self._s.execute(
                select(password_reset_tokens).where(
                    password_reset_tokens.c.token_hash == token_hash
                )
            )
        ).first()
        if row is None:
            return None
        return ResetToken(
            id=row.id,
            user_id=row.user_id,
            token_hash=row.token_hash,
            created_at=_aware(row.created_at),
            expires_at=_aware(row.expires_at),
            used_at=_aware_opt(row.used_at),
        )

    async def use(self, token_id: str, now: datetime) -> bool:
        result = await self._s.execute(
            update(password_reset_tokens)
            .where(
                password_reset_tokens.c.id == token_id,
                password_reset_tokens.c.used_at.is_(None),
                password_reset_tokens.c.expires_at > now,
            )
            .values(used_at=now)
        )
        return _rowcount(result) == 1

    async def invalidate_for_user(self, user_id: str, now: datetime) -> None:
        await self._s.execute(
            update(password_reset_tokens)
            .where(
                password_reset_tokens.c.user_id == user_id,
                password_reset_tokens.c.used_at.is_(None),
            )
            .values(used_at=now)
        )

    async def delete_dead(self, now: datetime, batch_size: int) -> int:
        dead = (
            select(password_reset_tokens.c.id)
            .where(
                or_(
                    password_reset_tokens.c.used_at.is_not(None),
                    password_reset_tokens.c.expires_at <= now,
                )
            )
            .limit(batch_size)
        )
        ids = list((await self._s.execute(dead)).scalars())
        if not ids:
            return 0
        result = await self._s.execute(
            delete(password_reset_tokens).where(password_reset_tokens.c.id.in_(ids))
        )
        return _rowcount(result)


def _insert_session_if_generation(session: Session, generation: int) -> Insert:
    """``INSERT … SELECT … WHERE`` the user's generation is still ``generation``."""
    source = select(
        literal(session.id),
        literal(session.user_id),
        literal(session.created_at, auth_sessions.c.created_at.type),
        literal(session.last_used_at, auth_sessions.c.last_used_at.type),
        literal(session.expires_at, auth_sessions.c.expires_at.type),
        literal(session.user_agent, auth_sessions.c.user_agent.type),
        literal(session.ip, auth_sessions.c.ip.type),
    ).where(
        select(users.c.id)
        .where(users.c.id == session.user_id, users.c.generation == generation)
        .exists()
    )
    return insert(auth_sessions).from_select(
        ["id", "user_id", "created_at", "last_used_at", "expires_at", "user_agent", "ip"],
        source,
    )


def _insert_token(token: RefreshToken) -> Insert:
    return insert(refresh_tokens).values(
        id=token.id,
        session_id=token.session_id,
        user_id=token.user_id,
        token_hash=token.token_hash,
        created_at=token.created_at,
        revoked_at=token.revoked_at,
    )


class UnitOfWorkSessionStarts:
    """``SessionStarts`` as one unit of work: the user row share-locked on PostgreSQL (see
    ``add_session_if_generation``), the session, its token, the commit."""

    def __init__(self, uow: Callable[[], AuthUnitOfWork]) -> None:
        self._uow = uow

    async def start(self, session: Session, token: RefreshToken, generation: int) -> bool:
        async with self._uow() as uow:
            if not await uow.sessions.add_session_if_generation(session, generation):
                return False
            await uow.sessions.add_token(token)
            await uow.commit()
        return True


def _bind(column: Any) -> Any:
    return bindparam(column.name, type_=column.type)


# A login's step on PostgreSQL as one statement: share-lock the user row while its generation
# still matches, insert the session from it, insert the token from the session. No row
# matches: nothing is inserted.
_user_id = bindparam("user_id", type_=users.c.id.type)
_locked_user = (
    select(users.c.id)
    .where(users.c.id == _user_id, users.c.generation == bindparam("generation"))
    .with_for_update(read=True)
    .cte("locked_user")
)
_new_session = (
    insert(auth_sessions)
    .from_select(
        ["id", "user_id", "created_at", "last_used_at", "expires_at", "user_agent", "ip"],
        select(
            bindparam("session_id", type_=auth_sessions.c.id.type),
            _locked_user.c.id,
            *(_bind(auth_sessions.c[name]) for name in ("created_at", "last_used_at")),
            *(_bind(auth_sessions.c[name]) for name in ("expires_at", "user_agent", "ip")),
        ),
    )
    .returning(auth_sessions.c.id)
    .cte("new_session")
)
_START_SESSION = insert(refresh_tokens).from_select(
    ["id", "session_id", "user_id", "token_hash", "created_at"],
    select(
        bindparam("token_id", type_=refresh_tokens.c.id.type),
        _new_session.c.id,
        _user_id,
        _bind(refresh_tokens.c.token_hash),
        bindparam("token_created_at", type_=refresh_tokens.c.created_at.type),
    ),
)


class SqlSessionStarts:
    """``SessionStarts`` on PostgreSQL: one statement (the user row share-locked while its
    generation matches, the session, the token) that commits by itself (autocommit: one round
    trip where a unit of work takes five; a single statement is its own transaction, so the
    lock is held until its commit as inside ``BEGIN``/``COMMIT``), run on asyncpg directly,
    compiled once (``adapters/driver_statements.py``), unless a trace is sampled (SQLAlchemy's
    execution then makes the statement's span). Behind a transaction pooler (PgBouncer) it
    keeps ``BEGIN``/``COMMIT`` through SQLAlchemy, which pin the statement's prepare and
    execution to one server connection. A reset or change that updates the user row either
    committed before (no row matches) or waits for this commit and then revokes the new
    session with the others."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._autocommit = (
            None if db.pooled else db.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        self._compiled = DriverStatement(_START_SESSION, db.engine.dialect, ())

    async def start(self, session: Session, token: RefreshToken, generation: int) -> bool:
        params = _session_start_params(session, token, generation)
        try:
            if self._autocommit is None:
                async with self._db.engine.begin() as conn:
                    result = await conn.execute(_START_SESSION, params)
            elif tracing.recording():
                async with self._autocommit.connect() as conn:
                    result = await conn.execute(_START_SESSION, params)
            else:
                return await execute_count(self._db.engine, self._compiled, params) == 1
        except Exception as exc:
            translated = translate_error(exc)
            if translated is not None:
                raise translated from exc
            raise
        return _rowcount(result) == 1


# The same two statements as ``_insert_session_if_generation`` and ``_insert_token``, built
# once with bind parameters: building them per login (and walking their cache keys) cost more
# than running them on the writer's thread, where it holds the GIL the event loop needs.
_INSERT_SESSION_IF_GENERATION = insert(auth_sessions).from_select(
    ["id", "user_id", "created_at", "last_used_at", "expires_at", "user_agent", "ip"],
    select(
        bindparam("session_id", type_=auth_sessions.c.id.type),
        _user_id,
        *(_bind(auth_sessions.c[name]) for name in ("created_at", "last_used_at")),
        *(_bind(auth_sessions.c[name]) for name in ("expires_at", "user_agent", "ip")),
    ).where(
        select(users.c.id)
        .where(users.c.id == _user_id, users.c.generation == bindparam("generation"))
        .exists()
    ),
)
_INSERT_TOKEN = insert(refresh_tokens).values(
    id=bindparam("token_id", type_=refresh_tokens.c.id.type),
    session_id=bindparam("session_id", type_=refresh_tokens.c.session_id.type),
    user_id=_user_id,
    token_hash=_bind(refresh_tokens.c.token_hash),
    created_at=bindparam("token_created_at", type_=refresh_tokens.c.created_at.type),
)


def _session_start_params(session: Session, token: RefreshToken, generation: int) -> dict[str, Any]:
    """The bind parameters of ``_START_SESSION`` and of the two statements above."""
    return {
        "user_id": session.user_id,
        "generation": generation,
        "session_id": session.id,
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "expires_at": session.expires_at,
        "user_agent": session.user_agent,
        "ip": session.ip,
        "token_id": token.id,
        "token_hash": token.token_hash,
        "token_created_at": token.created_at,
    }


class GroupCommitSessionStarts:
    """``SessionStarts`` on embedded SQLite: the same statements as a unit of work's
    ``add_session_if_generation`` and ``add_token``, run by the group commit writer in one hop
    to its thread, in a transaction shared with concurrent writes. The generation check holds
    because the writer's transaction owns SQLite's write lock (``BEGIN IMMEDIATE``), which a
    password reset or change also needs for its update. The two statements run on the driver
    (``adapters/driver_statements.py``), compiled once for it."""

    def __init__(self, writer: SqliteGroupCommit) -> None:
        self._writer = writer
        self._session = DriverStatement(_INSERT_SESSION_IF_GENERATION, writer.dialect, ())
        self._token = DriverStatement(_INSERT_TOKEN, writer.dialect, ())

    async def start(self, session: Session, token: RefreshToken, generation: int) -> bool:
        params = _session_start_params(session, token, generation)
        session_sql, session_args = self._session.sql, self._session.args(params)
        token_sql, token_args = self._token.sql, self._token.args(params)

        def write(conn: Connection) -> bool:
            driver = sqlite_driver(conn)
            if sqlite_execute(driver, session_sql, session_args).rowcount != 1:
                return False
            sqlite_execute(driver, token_sql, token_args)
            return True

        try:
            return await self._writer.run(write)
        except Exception as exc:
            translated = translate_error(exc)
            if translated is not None:
                raise translated from exc
            raise
