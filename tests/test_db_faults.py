"""The database going away while serving: refused, reset, or a link that hangs.

The bot talks to PostgreSQL through `FaultProxy`. Whatever the network does, a command
gets an answer ("could not record, try again", never a stack trace or a false
confirmation), the health checks say unhealthy, and service resumes by itself once the
database is reachable again. The time each answer took is printed (`-s`), not asserted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url

from bot import db
from bot.app import build_app
from bot.demo import FakeSlack
from bot.models import TimelineEntry
from bot.services import FollowUps, build_services
from bot.web import build_wsgi
from tests.conftest import (
    ALICE,
    CHANNEL,
    TEST_DATABASE_URL,
    Bot,
    Clock,
    Reply,
    _drop_postgres_schema,
    _postgres_engine,
    make_settings,
)
from tests.faultproxy import FaultProxy
from tests.slack.test_capture import shortcut_request

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")

# A bound on each call, so that a regression fails the test instead of hanging the suite.
GUARD_S = 20.0


@dataclass
class Faulty:
    bot: Bot
    proxy: FaultProxy
    direct_count: Callable[[], int]
    health: Callable[[str], tuple[int, dict[str, Any]]]


@pytest.fixture
def faulty(fake_slack: FakeSlack) -> Iterator[Faulty]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    direct = _postgres_engine(schema)
    db.create_schema(direct)
    url = make_url(TEST_DATABASE_URL)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    through_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    engine = db.make_engine(through_proxy, connect_args={"options": f"-csearch_path={schema}"})
    clock = Clock()
    settings = make_settings(through_proxy, fake_slack.api_url)
    services = build_services(settings, engine=engine, clock=clock, create_schema=False)
    app = build_app(settings, services)
    wsgi = build_wsgi(app, services)

    def health(path: str) -> tuple[int, dict[str, Any]]:
        captured: dict[str, Any] = {}

        def start_response(status: str, _headers: list[tuple[str, str]]) -> None:
            captured["status"] = int(status.split()[0])

        body = b"".join(wsgi({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
        return captured["status"], json.loads(body)

    def direct_count() -> int:
        with direct.connect() as connection:
            return connection.scalar(select(func.count()).select_from(TimelineEntry)) or 0

    try:
        yield Faulty(
            bot=Bot(app=app, services=services, fake=fake_slack, clock=clock),
            proxy=proxy,
            direct_count=direct_count,
            health=health,
        )
    finally:
        proxy.heal()
        services.followups.wait(timeout=10)
        engine.dispose()
        proxy.stop()
        direct.dispose()
        _drop_postgres_schema(schema)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """Run `call` in a thread, bounded by GUARD_S; its result and how long it took."""
    result: dict[str, Any] = {}

    def run() -> None:
        result["value"] = call()

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GUARD_S)
    assert not thread.is_alive(), f"no answer within {GUARD_S} s: the request hung"
    return result["value"], time.monotonic() - started


def note(faulty: Faulty, text: str) -> Reply:
    reply, took = timed(lambda: faulty.bot.command(f"note {text}"))
    print(f"/incident note {text!r}: {reply.status} in {took:.2f} s: {reply.text[:60]!r}")
    return reply  # type: ignore[no-any-return]


def assert_could_not_record(reply: Reply) -> None:
    assert reply.status == 200
    assert "could not record" in reply.text and "try again" in reply.text
    assert "Traceback" not in reply.visible and "Added to" not in reply.visible


def assert_unhealthy(faulty: Faulty) -> None:
    (status, body), took = timed(lambda: faulty.health("/healthz"))
    print(f"/healthz: {status} in {took:.2f} s")
    assert (status, body) == (503, {"database": "unreachable"})
    (status, body), took = timed(lambda: faulty.health("/readyz"))
    print(f"/readyz: {status} in {took:.2f} s")
    assert status == 503 and body["database"] == "unreachable"


def resumes(faulty: Faulty, text: str, attempts: int = 3) -> None:
    """After healing, commands are recorded again (the first may meet a dead pooled link)."""
    for _ in range(attempts):
        reply = note(faulty, text)
        if "Added to" in reply.text:
            break
        assert_could_not_record(reply)
    else:
        pytest.fail(f"still not recording after {attempts} attempts")
    assert faulty.health("/healthz")[0] == 200
    assert faulty.health("/readyz")[0] == 200


def test_database_refusing_connections(faulty: Faulty) -> None:
    assert "INC-1" in faulty.bot.command("start Outage").text
    assert "Added to" in note(faulty, "before").text

    faulty.proxy.refuse()
    assert_could_not_record(note(faulty, "while refused"))
    assert_unhealthy(faulty)

    faulty.proxy.heal()
    resumes(faulty, "after")
    assert faulty.direct_count() == 2  # "before" and "after"; nothing of the failed one


def test_connections_reset(faulty: Faulty) -> None:
    assert "INC-1" in faulty.bot.command("start Outage").text
    assert "Added to" in note(faulty, "before").text

    faulty.proxy.reset()
    assert_could_not_record(note(faulty, "while reset"))
    assert_could_not_record(note(faulty, "still reset"))
    assert_unhealthy(faulty)

    faulty.proxy.heal()
    resumes(faulty, "after")
    assert faulty.direct_count() == 2


def test_a_link_that_hangs_without_answering(faulty: Faulty) -> None:
    assert "INC-1" in faulty.bot.command("start Outage").text
    assert "Added to" in note(faulty, "before").text

    faulty.proxy.hang()
    assert_could_not_record(note(faulty, "while partitioned"))  # an open pooled link
    assert_could_not_record(note(faulty, "still partitioned"))  # a new connection attempt
    assert_unhealthy(faulty)

    faulty.proxy.heal()
    resumes(faulty, "after")
    assert faulty.direct_count() == 2  # the partitioned notes were never committed


def test_a_link_that_hangs_during_the_commit_is_not_called_a_failure(faulty: Faulty) -> None:
    assert "INC-1" in faulty.bot.command("start Outage").text
    engine = faulty.bot.services.engine

    def hang_at_commit(_connection: object) -> None:
        faulty.proxy.hang()  # the COMMIT is sent into a link that no longer answers

    event.listen(engine, "commit", hang_at_commit)
    try:
        reply = note(faulty, "during the commit")
    finally:
        event.remove(engine, "commit", hang_at_commit)

    assert reply.status == 200
    assert "could not confirm" in reply.text and "/incident status" in reply.text
    assert "Added to" not in reply.visible and "Nothing was saved" not in reply.visible
    faulty.proxy.heal()
    resumes(faulty, "after")


def test_a_database_lost_after_a_close_is_reported_to_the_person_who_closed(
    faulty: Faulty,
) -> None:
    """The close is committed and acknowledged; the database goes away before the postmortem
    is written. The channel gets no summary, and the person who closed is told why."""
    bot = faulty.bot
    bot.services.followups = FollowUps(max_workers=1)
    assert "INC-1" in bot.command("start Outage").text
    gate = threading.Event()
    bot.services.followups.submit(gate.wait)  # the close's publishing queues behind this

    reply, _ = timed(lambda: bot.command("close fixed"))
    assert "is closed" in reply.text
    faulty.proxy.refuse()
    gate.set()
    bot.wait()

    [told] = bot.fake.wait_for_responses(1)
    assert "INC-1 is closed" in told["text"] and "export INC-1" in told["text"]
    assert bot.fake.calls_to("chat.postMessage") == []


@pytest.mark.parametrize("fault", ["refuse", "hang"])
def test_the_message_shortcut_with_the_database_gone_says_so_and_stores_nothing(
    faulty: Faulty, fault: str
) -> None:
    bot = faulty.bot
    assert "INC-1" in bot.command("start Outage").text
    ts = bot.fake.post(CHANNEL, "rolled back", user=ALICE, ts="1795154400.000100")
    message = {"type": "message", "user": ALICE, "text": "rolled back", "ts": ts}
    body, headers = shortcut_request(bot, message)

    getattr(faulty.proxy, fault)()
    reply, took = timed(lambda: bot.dispatch(body, headers))
    print(f"shortcut while the database is gone ({fault}): {reply.status} in {took:.2f} s")

    assert reply.status == 200  # acknowledged: Slack shows no error of its own
    [told] = bot.fake.wait_for_responses(1)
    assert "could not record" in told["text"] and "try again" in told["text"]
    faulty.proxy.heal()
    assert faulty.direct_count() == 0


@pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)
def test_the_first_command_after_the_database_restarts_is_recorded(bot: Bot) -> None:
    """A restart of PostgreSQL (or pg_terminate_backend, an idle timeout) closes every pooled
    connection while it sits idle: the next command must get a live one, not fail on it."""
    engine = bot.services.engine
    engine.dispose()  # every connection from here on is seen by `remember`
    backends: set[int] = set()

    def remember(dbapi_connection: Any, _record: object) -> None:
        backends.add(dbapi_connection.info.backend_pid)

    event.listen(engine, "connect", remember)
    assert "INC-1" in bot.command("start Outage").text
    assert "Added to" in bot.command("note before").text
    assert db.ping(engine)
    assert backends

    admin = create_engine(make_url(TEST_DATABASE_URL))
    try:
        with admin.connect() as connection:
            for pid in backends:
                connection.execute(select(func.pg_terminate_backend(pid)))
            for _ in range(100):  # each backend says why and closes its socket, then exits
                alive = connection.scalar(
                    select(func.count())
                    .select_from(text("pg_stat_activity"))
                    .where(text("pid = ANY(:pids)").bindparams(pids=list(backends)))
                )
                if not alive:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the terminated backends did not exit")
    finally:
        admin.dispose()

    reply, _ = timed(lambda: bot.command("note after the restart"))
    assert "Added to" in reply.text
    assert db.ping(engine)
    with bot.services.sessions() as session:
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 2
