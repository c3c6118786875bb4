"""Fixtures: the real Bolt app on SQLite or PostgreSQL, Slack played by our stand-in on loopback.

`db_url` is parametrised over SQLite and PostgreSQL; the PostgreSQL case runs when
TEST_DATABASE_URL names a server, each test in a schema of its own that is dropped after.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from slack_bolt import App
from slack_bolt.request import BoltRequest
from sqlalchemy import Engine, create_engine, insert, select, text, update
from sqlalchemy.engine import make_url

from bot import db
from bot.app import build_app
from bot.config import Settings
from bot.demo import FakeSlack, SlashCommand, message_refusal, sign
from bot.models import Incident, TimelineEntry
from bot.services import Services, build_services

SECRET = "test-signing-secret"
TOKEN = "xoxb-test-token"
TEAM = "T0TEST0001"
CHANNEL = "C0TEST0001"
ALICE = "U0ALICE001"  # Africa/Nairobi
BOB = "U0BOB00001"  # America/Los_Angeles
NOBODY = "U0NOTZ0001"  # users.info says user_not_found -> INCIDENT_TIMEZONE
# Friday 20 November 2026, 09:00 in Nairobi: a fixed "now" for the tests that need one.
NOW = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
LOCK_TIMEOUT = "60s"


class Clock:
    """A clock the tests move by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def _postgres_engine(schema: str) -> Engine:
    url = make_url(TEST_DATABASE_URL)
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    # A test that fails inside a transaction may leave it open, holding its locks, until
    # teardown (a hypothesis test runs its next example first): wait a minute, not forever.
    options = f"-csearch_path={schema} -clock_timeout={LOCK_TIMEOUT}"
    return db.make_engine(TEST_DATABASE_URL, connect_args={"options": options})


def _drop_postgres_schema(schema: str) -> None:
    admin = create_engine(make_url(TEST_DATABASE_URL))
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    if kind == "postgresql" and not TEST_DATABASE_URL:
        pytest.skip("TEST_DATABASE_URL is not set")
    return kind


@dataclass
class Database:
    """A database for one test: its URL (for subprocesses) and an engine on it."""

    url: str
    engine: Engine
    env: dict[str, str] = field(default_factory=dict)  # extra environment for subprocesses


@pytest.fixture
def database(db_kind: str, tmp_path: Path) -> Iterator[Database]:
    if db_kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'incidents.db'}"
        engine = db.make_engine(url)
        db.create_schema(engine)
        yield Database(url=url, engine=engine)
        engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = _postgres_engine(schema)
    db.create_schema(engine)
    try:
        yield Database(
            url=TEST_DATABASE_URL, engine=engine, env={"PGOPTIONS": f"-csearch_path={schema}"}
        )
    finally:
        engine.dispose()
        _drop_postgres_schema(schema)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack(
        users={ALICE: "Africa/Nairobi", BOB: "America/Los_Angeles"}, team_id=TEAM
    ).start()
    yield fake
    fake.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_settings(database_url: str, api_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": TOKEN,
        "slack_signing_secret": SECRET,
        "slack_app_token": None,
        "slack_client_id": None,
        "slack_client_secret": None,
        "database_url": database_url,
        "slack_api_url": api_url,
        "incident_timezone": "UTC",
        "templates_dir": None,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Reply:
    """What the app answered a command with (the HTTP status and the JSON body)."""

    status: int
    body: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def visible(self) -> str:
        """All text a person would see: the fallback and every block's text."""
        return self.text + "\n" + json.dumps(self.body.get("blocks", []), ensure_ascii=False)

    @property
    def in_channel(self) -> bool:
        return self.body.get("response_type") == "in_channel"


@dataclass
class Bot:
    """The real app, dispatching signed requests, with helpers to speak as a person."""

    app: App
    services: Services
    fake: FakeSlack
    clock: Clock

    def command(
        self,
        typed: str,
        *,
        user: str = ALICE,
        channel: str = CHANNEL,
        team: str = TEAM,
        escaped: bool = False,
        enterprise: str | None = None,
    ) -> Reply:
        """Send `/incident <typed>` as Slack would: escaped, form-encoded and signed."""
        return self.dispatch(
            *self.signed_command(
                typed, user=user, channel=channel, team=team, escaped=escaped, enterprise=enterprise
            )
        )

    def signed_command(
        self,
        typed: str,
        *,
        user: str = ALICE,
        channel: str = CHANNEL,
        team: str = TEAM,
        escaped: bool = False,
        with_trigger_id: bool = True,
        enterprise: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """The body and headers of `/incident <typed>`, to send (and perhaps send again); with
        `enterprise`, typed in workspace `team` of that org-wide installed organization."""
        slash = SlashCommand(
            secret=SECRET,
            team_id=team,
            channel_id=channel,
            user_id=user,
            response_url=self.fake.response_url(channel),
            enterprise_id=enterprise,
        )
        return slash.signed(typed, escaped=escaped, with_trigger_id=with_trigger_id)

    def dispatch(self, body: str, headers: dict[str, str]) -> Reply:
        request_headers: dict[str, str | Sequence[str]] = dict(headers)
        response = self.app.dispatch(BoltRequest(body=body, headers=request_headers))
        payload = json.loads(response.body) if response.body else {}
        if isinstance(payload, dict) and ("text" in payload or "blocks" in payload):
            # An answer Slack would refuse is an answer no one sees.
            assert message_refusal(payload) is None, f"Slack would refuse: {response.body}"
        return Reply(status=response.status, body=payload)

    def wait(self) -> None:
        assert self.services.followups.wait(timeout=30), "follow-up work did not finish"

    def signed(self, body: str, **kwargs: Any) -> dict[str, str]:
        return sign(SECRET, body, **kwargs)


@pytest.fixture
def bot(database: Database, fake_slack: FakeSlack, clock: Clock) -> Bot:
    settings = make_settings(database.url, fake_slack.api_url)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    app = build_app(settings, services)
    return Bot(app=app, services=services, fake=fake_slack, clock=clock)


def add_entries(bot: Bot, count: int, text: str, channel: str = CHANNEL) -> None:
    """Give the channel's open incident `count` entries (#1 first in time) without `count`
    commands."""
    with bot.services.sessions() as session:
        incident = session.scalars(
            select(Incident).where(Incident.team_id == TEAM, Incident.channel_id == channel)
        ).one()
        incident_id, started = incident.id, incident.started_at
    rows = [
        {
            "incident_id": incident_id,
            "occurred_at": started + timedelta(seconds=n),
            "recorded_at": started + timedelta(seconds=n),
            "author_id": ALICE,
            "kind": "note",
            "text": f"entry {n + 1}: {text}",
            "number": n + 1,
        }
        for n in range(count)
    ]
    with bot.services.engine.begin() as conn:
        conn.execute(insert(TimelineEntry), rows)
        conn.execute(
            update(Incident).where(Incident.id == incident_id).values(last_entry_number=count)
        )


T = TypeVar("T")


def at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """`work(0)` … `work(count - 1)`, each in a thread of its own, all released together."""
    barrier = threading.Barrier(count)

    def run(n: int) -> T:
        barrier.wait()
        return work(n)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))
