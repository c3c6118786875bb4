"""Engine and session factory; the declarative base, the aware-UTC column type; migrations."""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from select import POLLIN, poll
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# How long a SQLite writer waits for another process's lock before giving up: well inside
# Slack's 3 seconds, and thousands of times longer than one command's write.
SQLITE_BUSY_TIMEOUT_S = 2

# PostgreSQL: give up on a connection attempt after 2 s (libpq's minimum), notice a dead
# link through TCP itself, and never wait long for a free connection from the pool.
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 3000,  # ms that sent data may stay unacknowledged
}
PG_POOL_TIMEOUT_S = 2
# Connections a pool keeps open; it lends more (up to what `make_engine` is told) when busy.
POOL_SIZE = 5


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware.

    SQLite has no time zone type, so values are normalised to UTC on the way in and
    marked as UTC on the way out; naive datetimes are refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, _dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def make_engine(database_url: str, *, connections: int | None = None, **kwargs: Any) -> Engine:
    """Create the engine, with SQLite set up for several threads and processes; its pool
    lends at least `connections` at once (SQLAlchemy's default is 15)."""
    url = make_url(database_url)
    if connections is not None and not in_memory(url):  # SQLite in memory keeps no pool
        kwargs.setdefault("pool_size", POOL_SIZE)
        kwargs.setdefault("max_overflow", max(10, connections - POOL_SIZE))
    # SQLAlchemy's errors repeat the statement's values, and errors are logged: those values
    # are a workspace's bot token when an install is kept, or what people typed.
    kwargs.setdefault("hide_parameters", True)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
            **kwargs,
        )
        _configure_sqlite(engine)
        if not in_memory(url) and not url.query.get("uri"):
            _keep_to_the_file(engine, url.database or "")  # before _track_holders, as below
        _track_holders(engine)
        return engine
    kwargs["connect_args"] = {**PG_CONNECT_ARGS, **kwargs.get("connect_args", {})}
    kwargs.setdefault("pool_timeout", PG_POOL_TIMEOUT_S)
    kwargs.setdefault("pool_recycle", 300)
    # No pre-ping: a ping on a link that hangs would wait outside any deadline (it runs
    # before the pool says which thread holds the connection). A connection the server
    # closed while it sat idle (a restart, pg_terminate_backend) is found without a round
    # trip instead, by `_replace_closed_links`.
    kwargs.setdefault("pool_pre_ping", False)
    engine = create_engine(url, **kwargs)
    _replace_closed_links(engine)  # before _track_holders: a replaced link is never held
    _track_holders(engine)
    return engine


def in_memory(url: URL) -> bool:
    """Whether `url` is a SQLite database in memory, which each connection has its own of."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


class DatabaseFileGoneError(SQLAlchemyError):
    """The SQLite database file a connection opened is no longer at its path."""


def _keep_to_the_file(engine: Engine, path: str) -> None:
    """Hand out no SQLite connection whose database file was deleted.

    SQLite goes on writing to the file it opened after that file is deleted (`rm
    incidents.db`, a volume cleaned up): every command would still be committed into it and
    acknowledged, and lost with the file when the process exits, while /healthz said ok.
    Each connection remembers the file it opened; while its path names no file, commands
    are refused ("could not record") and no empty database is made in its place, and once a
    file is there again (put back, or another moved over it) new connections open it.
    """
    opened_before = False

    @event.listens_for(engine, "do_connect")
    def _on_do_connect(_dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
        # The first connection may create the file (`db upgrade` of a new database); after
        # that, a missing file was deleted.
        if opened_before and _identity(path) is None:
            raise sqlite3.OperationalError(f"the database file {path} was deleted")

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        nonlocal opened_before
        opened_before = True
        record.info[_OPENED_FILE] = _identity(path)

    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        found = _identity(path)
        if found is None:
            raise DatabaseFileGoneError(f"the database file {path} was deleted")
        if found != record.info.get(_OPENED_FILE):
            raise DisconnectionError(f"another file was put at {path}: opening it")


_OPENED_FILE = "incident_bot_sqlite_file"


def _identity(path: str) -> tuple[int, int] | None:
    """The device and inode of the file at `path`; None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def _replace_closed_links(engine: Engine) -> None:
    """Hand out no pooled PostgreSQL connection that the server has already closed.

    A server that restarts, or ends a backend, says so on each idle connection and closes
    it; without this the next command to take that connection from the pool would fail
    ("could not record") on a database that is up. An idle connection is sent nothing
    otherwise (the bot never LISTENs), so one with anything to read, or its end, is dead:
    the pool replaces it with a new connection before the command uses it.
    """

    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if _closed_by_server(dbapi_connection):
            raise DisconnectionError("the server closed this connection while it was idle")


def _closed_by_server(dbapi_connection: Any) -> bool:
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:
        return False
    if dbapi_connection.closed or pgconn.status != 0:  # 0: libpq's CONNECTION_OK
        return True
    poller = poll()
    poller.register(pgconn.socket, POLLIN)
    return bool(poller.poll(0))


# --- deadlines --------------------------------------------------------------------------------

_holders: weakref.WeakKeyDictionary[Engine, dict[int, list[Any]]] = weakref.WeakKeyDictionary()
# Threads still inside blocks whose deadline has passed, and how many such blocks.
_late: weakref.WeakKeyDictionary[Engine, dict[int, int]] = weakref.WeakKeyDictionary()
_holders_lock = threading.Lock()


class DeadlinePassedError(SQLAlchemyTimeoutError):
    """A connection was asked for after the thread's deadline had passed."""


def _track_holders(engine: Engine) -> None:
    """Remember which thread holds which DBAPI connection, so a deadline can cut its link."""
    held: dict[int, list[Any]] = {}
    _holders[engine] = held

    @event.listens_for(engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        thread = threading.get_ident()
        with _holders_lock:
            if thread in _late.get(engine, ()):
                # The deadline passed before there was a link to cut (a short one, or a slow
                # pool): the call must not go on to wait outside it, on a lock say.
                raise DeadlinePassedError("the deadline passed before the database was reached")
            held.setdefault(thread, []).append(dbapi_connection)

    @event.listens_for(engine.pool, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        with _holders_lock:
            for thread, connections in list(held.items()):
                if dbapi_connection in connections:
                    connections.remove(dbapi_connection)
                    if not connections:
                        del held[thread]


@contextmanager
def deadline(engine: Engine, seconds: float) -> Iterator[None]:
    """Database calls made by this thread in the block fail, rather than wait, after `seconds`.

    A database that stops answering (a partition, a hung server) would otherwise hold the
    request until TCP gives up, long after Slack's 3 seconds. When the time is up, the
    sockets of the connections this thread holds are shut down (SQLite's statement is
    interrupted), so the blocked call raises at once and the caller can say "could not
    record".
    """
    thread = threading.get_ident()
    ended = passed = False

    def expire() -> None:
        nonlocal passed
        with _holders_lock:
            if ended:  # the block ended as the alarm went off
                return
            passed = True
            late = _late.setdefault(engine, {})
            late[thread] = late.get(thread, 0) + 1
            connections = list(_holders.get(engine, {}).get(thread, []))
        for connection in connections:
            _cut(connection)

    alarm = _WATCHDOG.schedule(time.monotonic() + seconds, expire)
    try:
        yield
    finally:
        with _holders_lock:
            ended = alarm.cancelled = True
            late = _late.get(engine, {})
            if passed:  # a deadline nested in this one may still hold the thread late
                late[thread] -= 1
                if not late[thread]:
                    del late[thread]


@dataclass(order=True)
class _Alarm:
    due: float
    sequence: int
    action: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class _Watchdog:
    """One thread that runs the actions of deadlines that pass (a Timer per command would
    start a thread per command, which costs more than the command's own work)."""

    def __init__(self) -> None:
        self._alarms: list[_Alarm] = []
        self._wakeup = threading.Condition()
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, due: float, action: Callable[[], None]) -> _Alarm:
        alarm = _Alarm(due, next(self._sequence), action)
        with self._wakeup:
            heapq.heappush(self._alarms, alarm)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="db-deadline", daemon=True)
                self._thread.start()
            if self._alarms[0] is alarm:  # the watchdog sleeps until an earlier one otherwise
                self._wakeup.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while self._alarms and self._alarms[0].cancelled:
                    heapq.heappop(self._alarms)
                if not self._alarms:
                    self._wakeup.wait()
                    continue
                wait = self._alarms[0].due - time.monotonic()
                if wait > 0:
                    self._wakeup.wait(wait)
                    continue
                alarm = heapq.heappop(self._alarms)
            if not alarm.cancelled:
                try:
                    alarm.action()
                except Exception:
                    pass  # cutting a link must never stop the watchdog


_WATCHDOG = _Watchdog()


def _cut(dbapi_connection: Any) -> None:
    try:
        pgconn = getattr(dbapi_connection, "pgconn", None)
        if pgconn is not None:
            with socket.socket(fileno=os.dup(pgconn.socket)) as link:
                link.shutdown(socket.SHUT_RDWR)
        elif hasattr(dbapi_connection, "interrupt"):
            dbapi_connection.interrupt()
    except Exception:
        pass  # already closed: nothing left to cut


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINT; take it over
    # (the recipe in SQLAlchemy's SQLite dialect docs) and begin IMMEDIATE so that two
    # writers queue on the lock instead of failing with "database is locked" mid-transaction.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if not in_memory(engine.url):
            cursor.execute("PRAGMA journal_mode = WAL")
            # A command is acknowledged once committed: the log is synced at every commit,
            # or a power cut or OS crash would roll back commands already answered (NORMAL
            # in WAL mode syncs only at checkpoints). Group commit spreads the cost.
            cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    # Writers of this process queue on a lock before BEGIN IMMEDIATE: SQLite's own busy
    # handler sleeps on a back-off schedule (up to 100 ms at a time) and wakes in no order,
    # which made the slowest commands wait half a second under load (BENCHMARKS.md, cause
    # 3). The lock only orders threads; waiting for it is bounded by the busy timeout, after
    # which SQLite's handler takes over as before, so a lock that is somehow not released
    # can slow a worker down but never stop it.
    writers = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.connection.driver_connection.execute("BEGIN")  # a reader: no lock to take
            return
        conn.info["holds_writer_lock"] = writers.acquire(timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            # On the driver's own cursor: SQLAlchemy's execution path would cost a note more
            # than the BEGIN itself. Its errors are raised as SQLAlchemy's, as they were.
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            _release_writer(conn)
            raise DBAPIError.instance("BEGIN IMMEDIATE", None, error, sqlite3.Error) from error
        except BaseException:
            _release_writer(conn)
            raise

    def _release_writer(conn: Any) -> None:
        if conn.info.pop("holds_writer_lock", False):
            writers.release()

    @event.listens_for(engine, "commit")
    def _on_commit(conn: Any) -> None:
        _release_writer(conn)

    @event.listens_for(engine, "rollback")
    def _on_rollback(conn: Any) -> None:
        _release_writer(conn)


# The execution option that marks an engine's transactions as reads (`read_only`).
READ_ONLY = "incident_bot_read_only"


def read_only(engine: Engine) -> Engine:
    """The same engine and pool, for transactions that only read and see one moment of the
    database throughout: on SQLite a plain BEGIN, without the write lock, so that writers go
    on meanwhile (WAL keeps the reader's snapshot); on PostgreSQL REPEATABLE READ."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{READ_ONLY: True})
    return engine.execution_options(isolation_level="REPEATABLE READ")


def failed_commit_may_be_stored(engine: Engine) -> bool:
    """Whether a COMMIT that raised may have been carried out all the same.

    PostgreSQL's may: the server can commit and the link fail before its answer comes back.
    SQLite's COMMIT is a call into the library in this process: when it raises (a full disk,
    an I/O error, an interrupt at the deadline) the transaction was not committed, and the
    rollback that follows ends it.
    """
    return engine.dialect.name != "sqlite"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def ping(engine: Engine, *, timeout: float = 1.5) -> bool:
    """True when the database answers a trivial query within `timeout` seconds."""
    try:
        with deadline(engine, timeout), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


# --- the schema, managed by Alembic (bot/migrations) --------------------------------------

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The first migration is the schema as `create_all` made it before migrations existed;
# a database holding exactly these tables and no revision is recorded as being at it.
BASELINE_REVISION = "0001"
BASELINE_TABLES = frozenset(
    {"workspaces", "incidents", "timeline_entries", "field_changes", "actions", "postmortems"}
)

# Serialises `db upgrade` run by several machines at once (e.g. one per container start).
_PG_MIGRATION_LOCK = int.from_bytes(b"incident")


class SchemaError(Exception):
    """The database's schema cannot be upgraded by this version; the message says why."""


class SchemaState(StrEnum):
    CURRENT = "current"  # at this version's latest revision
    BEHIND = "behind"  # at an older revision: `db upgrade` brings it up to date
    MISSING = "missing"  # no revision recorded: a new database, or one from before migrations
    UNKNOWN = "unknown"  # a revision this version does not know, e.g. a newer version's


@dataclass(frozen=True)
class SchemaStatus:
    """Where the database's schema stands against the migrations shipped with this version."""

    state: SchemaState
    revisions: tuple[str, ...]  # recorded in the database
    heads: tuple[str, ...]  # this version's latest

    @property
    def is_current(self) -> bool:
        return self.state is SchemaState.CURRENT

    def advice(self) -> str:
        """What an operator should do about it, as a sentence."""
        match self.state:
            case SchemaState.CURRENT:
                return "Nothing to do."
            case SchemaState.UNKNOWN:
                return (
                    "Install the version of incident-bot that upgraded the database (or a "
                    "later one) and run `incident-bot db upgrade` with it."
                )
            case _:
                return (
                    "Run `incident-bot db upgrade` (before `serve`, "
                    "and after every upgrade of incident-bot)."
                )

    def describe(self) -> str:
        at, latest = _revisions(self.revisions), _revisions(self.heads)
        match self.state:
            case SchemaState.CURRENT:
                return f"the database's schema is current (revision {at})"
            case SchemaState.BEHIND:
                return (
                    f"the database's schema is at revision {at}, older than this version's {latest}"
                )
            case SchemaState.MISSING:
                return (
                    "the database has no incident-bot schema revision recorded "
                    "(a new database, or one made before incident-bot used migrations)"
                )
            case SchemaState.UNKNOWN:
                return (
                    f"the database's schema is at revision {at}, which this version of "
                    f"incident-bot does not know (it knows up to {latest}); "
                    "was it upgraded by a newer version?"
                )


@dataclass(frozen=True)
class SchemaUpgrade:
    """What `upgrade_schema` did."""

    before: tuple[str, ...]
    after: tuple[str, ...]
    adopted: bool  # tables made before migrations existed were recorded as the baseline

    def describe(self) -> str:
        after = _revisions(self.after)
        if self.adopted:
            return (
                f"recorded the existing tables as revision {BASELINE_REVISION} "
                f"and upgraded to revision {after}"
            )
        if not self.before:
            return f"created the schema at revision {after}"
        if self.before == self.after:
            return f"the schema is already current at revision {after}; nothing to do"
        return f"upgraded the schema from revision {_revisions(self.before)} to {after}"


def create_schema(engine: Engine) -> None:
    """Create or upgrade the schema to this version's latest revision (`alembic upgrade head`)."""
    upgrade_schema(engine)


def upgrade_schema(engine: Engine) -> SchemaUpgrade:
    """Run the migrations that `engine`'s database lacks, all in one transaction."""
    with migration_connection(engine) as connection:
        before = _recorded_revisions(connection)
        unknown = set(before) - _known_revisions()
        if unknown:
            status = SchemaStatus(SchemaState.UNKNOWN, before, _head_revisions())
            raise SchemaError(status.describe())
        config = alembic_config(connection)
        adopted = not before and _holds_baseline_tables(connection)
        if adopted:
            command.stamp(config, BASELINE_REVISION)
        command.upgrade(config, "head")
        after = _recorded_revisions(connection)
    return SchemaUpgrade(before=before, after=after, adopted=adopted)


def schema_status(engine: Engine) -> SchemaStatus:
    """Compare the revision recorded in the database with this version's latest."""
    with engine.connect() as connection:
        revisions = _recorded_revisions(connection)
    heads = _head_revisions()
    if not revisions:
        state = SchemaState.MISSING
    elif set(revisions) == set(heads):
        state = SchemaState.CURRENT
    elif set(revisions) <= _known_revisions():
        state = SchemaState.BEHIND
    else:
        state = SchemaState.UNKNOWN
    return SchemaStatus(state=state, revisions=revisions, heads=heads)


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration for the migrations shipped in the package, on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that is safe to migrate in, committed at the end.

    PostgreSQL: an advisory lock makes concurrent upgrades take turns. SQLite: foreign
    keys are off while migrating (they can only be switched outside a transaction),
    because a batch migration copies a table and drops the old one, and with them on
    that drop would cascade-delete every row that refers to it; they are checked
    before the commit instead.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            _sqlite_pragma(connection, "PRAGMA foreign_keys = OFF")
            try:
                with connection.begin():
                    yield connection
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise SchemaError(f"the migration left broken references: {broken}")
            finally:
                _sqlite_pragma(connection, "PRAGMA foreign_keys = ON")
        else:
            with connection.begin():
                connection.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
                yield connection


def _sqlite_pragma(connection: Connection, pragma: str) -> None:
    # On the DBAPI connection, so that SQLAlchemy does not begin a transaction first.
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(pragma)
    finally:
        cursor.close()


def _recorded_revisions(connection: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def _holds_baseline_tables(connection: Connection) -> bool:
    present = BASELINE_TABLES & set(inspect(connection).get_table_names())
    if present and present != BASELINE_TABLES:
        raise SchemaError(
            "the database has some of incident-bot's tables "
            f"({', '.join(sorted(present))}) but no schema revision; "
            "it was not made by incident-bot, or only partly"
        )
    return bool(present)


@cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def _head_revisions() -> tuple[str, ...]:
    return tuple(sorted(_scripts().get_heads()))


@cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


def _revisions(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "none"
