"""Many `incident-bot serve` processes on one PostgreSQL: nothing acknowledged is lost or doubled.

Real servers (gunicorn, several workers each) started as subprocesses on a schema made by
`incident-bot db upgrade`; Slack's side is played here: signed `/incident` requests over
keep-alive HTTP connections, and a FakeSlack for the Web API the servers call back.

The rule checked everywhere: a note whose reply said it was recorded ("Added to INC-n") is in
the database exactly once, in the incident of the channel it was typed in; a note that got any
other answer, or none, may or may not be there, but never twice.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy import select as select_rows

from bot import incidents as use_cases
from bot.db import make_session_factory
from bot.demo import FakeSlack, SlashCommand
from bot.models import Publication
from tests.conftest import ALICE, BOB, NOW, SECRET, TEAM, TEST_DATABASE_URL, TOKEN, Database
from tests.test_migrations import cli_env, empty_database_of, run_cli
from tests.test_web import free_port, http_get

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="TEST_DATABASE_URL is not set")

WORKERS = 2  # gunicorn worker processes per server
RECORDED = re.compile(r"^Added to \*(INC-\d+)\*")
# Bounds on every loop, so a hung server fails a test instead of hanging it; never asserted on.
READY_LIMIT_S = 60.0
STREAM_LIMIT_S = 90.0
REQUEST_TIMEOUT_S = 10.0
# gunicorn closes a keep-alive connection after 2 s idle; one idle half that long is not
# reused, so a request never races the server's close (as a load balancer's idle timeout
# is set shorter than its backends').
REUSE_IDLE_S = 1.0
STOP_LIMIT_S = 15.0


# --- servers ------------------------------------------------------------------------------


@dataclass
class Server:
    """One `incident-bot serve` (a gunicorn arbiter and its workers) in a session of its own."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def workers(self) -> list[int]:
        """The pids of the arbiter's live worker processes."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                state, parent = entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if int(parent) == self.process.pid and state != "Z":
                found.append(int(entry.name))
        return sorted(found)

    def kill_everything(self) -> None:
        """`kill -9` of the arbiter and every worker at once, as when the machine dies."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_LIMIT_S)

    def stop(self) -> None:
        """SIGTERM to the whole group (arbiter and workers), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return  # its group was killed with it, or it exited and its workers follow
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=STOP_LIMIT_S)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue


class Servers:
    """Starts `incident-bot serve` processes on one database and remembers every one."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.started: list[Server] = []
        # gunicorn puts its control socket in $XDG_RUNTIME_DIR (else one path in $HOME, shared
        # by every server on the machine); a short folder of our own keeps each server's apart
        # and within the length a Unix socket's path may have.
        self.runtime = tempfile.TemporaryDirectory(prefix="ib-")

    def start(self, name: str, *, port: int | None = None) -> Server:
        """Start a server (on `port`, or one the OS says is free) and wait until it is healthy."""
        port = port or free_port()
        log = self.workdir / f"serve-{name}-{len(self.started)}.log"
        runtime = Path(self.runtime.name, str(len(self.started)))
        runtime.mkdir()
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
                + ["--workers", str(WORKERS)],
                env={**self.env, "XDG_RUNTIME_DIR": str(runtime)},
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one signal reaches the workers
            )
        server = Server(name=name, port=port, process=process, log=log)
        self.started.append(server)
        deadline = time.monotonic() + READY_LIMIT_S
        while True:
            assert process.poll() is None, f"serve {name} exited:\n{server.tail()}"
            assert time.monotonic() < deadline, f"serve {name} never got healthy:\n{server.tail()}"
            try:
                if http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.1)

    def stop_all(self) -> None:
        for server in self.started:
            server.stop()
        self.runtime.cleanup()


@pytest.fixture
def shared_database(tmp_path: Path) -> Iterator[Database]:
    """A PostgreSQL schema of its own, empty until `incident-bot db upgrade` makes the tables."""
    with empty_database_of("postgresql", tmp_path / "unused.db") as database:
        upgrade = run_cli(database, "db", "upgrade", cwd=tmp_path)
        assert upgrade.returncode == 0, upgrade.stderr
        yield database


@pytest.fixture
def servers(shared_database: Database, fake_slack: FakeSlack, tmp_path: Path) -> Iterator[Servers]:
    env = cli_env(
        shared_database,
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake_slack.api_url,
            "INCIDENT_TIMEZONE": "UTC",
        },
    )
    started = Servers(env, tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


# --- Slack's side: signed commands over keep-alive connections ----------------------------


class NotSentError(Exception):
    """The connection could not be made: the request never left this process."""


class Client:
    """One keep-alive HTTP connection to a server, reopened when it breaks."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        self.last_answer = 0.0

    def connect(self) -> None:
        link = self.connection.sock
        if link is not None and (
            time.monotonic() - self.last_answer > REUSE_IDLE_S
            or select.select([link], [], [], 0)[0]  # readable while idle: the server closed it
        ):
            self.connection.close()
        if self.connection.sock is None:
            try:
                self.connection.connect()
            except OSError as error:
                self.connection.close()
                raise NotSentError(str(error)) from error

    def command(self, slash: SlashCommand, typed: str) -> tuple[int, str]:
        """Send `/incident <typed>`: the status and the reply's text.

        NotSentError when no connection could be made; OSError or HTTPException when the
        request may have reached the server but no answer came back.
        """
        self.connect()
        body, headers = slash.signed(typed)
        try:
            self.connection.request("POST", "/slack/events", body=body.encode(), headers=headers)
            response = self.connection.getresponse()
            payload = response.read()
            self.last_answer = time.monotonic()
            if response.will_close:
                self.connection.close()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            raise
        try:
            reply = str(json.loads(payload).get("text", ""))
        except ValueError:
            reply = payload.decode(errors="replace")
        return response.status, reply

    def close(self) -> None:
        self.connection.close()


def slash(fake: FakeSlack, channel: str, user: str = ALICE) -> SlashCommand:
    return SlashCommand(
        secret=SECRET,
        team_id=TEAM,
        channel_id=channel,
        user_id=user,
        response_url=fake.response_url(channel),
    )


@dataclass(frozen=True)
class Note:
    """One `/incident note <text>` to send: its text is unique across the test."""

    text: str
    channel: str
    server: int  # index into the servers it is sent to


@dataclass
class Answer:
    """What became of one note: the answer (None: none came) and when, relative to any kill."""

    note: Note
    status: int | None
    reply: str
    phase: str = "steady"

    @property
    def recorded_in(self) -> str | None:
        """The incident the reply says the note was added to, if it says so."""
        match = RECORDED.match(self.reply) if self.status == 200 else None
        return match.group(1) if match else None


@dataclass
class Stream:
    """Notes sent by `clients` threads, each with a keep-alive connection to every server."""

    fake: FakeSlack
    ports: Sequence[int]
    clients: int
    phase: Callable[[], str] = lambda: "steady"
    on_answer: Callable[[Answer], None] = lambda _answer: None
    answers: list[Answer] = field(default_factory=list)
    unsent: list[Note] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)  # give up early

    def run(self, notes: Sequence[Note]) -> None:
        deadline = time.monotonic() + STREAM_LIMIT_S
        lock = threading.Lock()

        def client(share: Sequence[Note]) -> None:
            connections = [Client(port) for port in self.ports]
            commands = {
                channel: slash(self.fake, channel) for channel in {n.channel for n in share}
            }
            try:
                for position, note in enumerate(share):
                    answer = self._send(connections, commands[note.channel], note, deadline)
                    with lock:
                        if answer is None:
                            self.unsent.extend(share[position:])
                            return
                        self.answers.append(answer)
                    self.on_answer(answer)
            finally:
                for connection in connections:
                    connection.close()

        with ThreadPoolExecutor(max_workers=self.clients) as pool:
            shares = [notes[i :: self.clients] for i in range(self.clients)]
            for future in [pool.submit(client, share) for share in shares]:
                future.result()

    def _send(
        self, connections: list[Client], command: SlashCommand, note: Note, deadline: float
    ) -> Answer | None:
        """Send one note; while its server refuses connections, wait and try the same note."""
        while time.monotonic() < deadline and not self.stopped.is_set():
            try:
                status, reply = connections[note.server].command(command, f"note {note.text}")
                return Answer(note, status, reply, self.phase())
            except NotSentError:
                time.sleep(0.05)  # nothing was sent: the server is down; it is safe to try again
            except (OSError, http.client.HTTPException) as error:
                return Answer(note, None, f"{type(error).__name__}: {error}", self.phase())
        return None


def start_incidents(fake: FakeSlack, server: Server, channels: Sequence[str]) -> dict[str, str]:
    """Open one incident per channel through `server`; channel -> its INC-n."""
    client = Client(server.port)
    opened = {}
    try:
        for channel in channels:
            status, reply = client.command(slash(fake, channel), f"start Outage in {channel}")
            match = re.match(r"^(INC-\d+) opened: ", reply)
            assert status == 200 and match, (status, reply)
            opened[channel] = match.group(1)
    finally:
        client.close()
    return opened


# --- what the database holds ---------------------------------------------------------------


def stored_notes(engine: Engine) -> dict[str, list[str]]:
    """Every stored note's text -> the channels of the incidents holding a copy of it."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT e.text, i.channel_id FROM timeline_entries e "
                "JOIN incidents i ON i.id = e.incident_id WHERE e.kind = 'note'"
            )
        ).all()
    found: dict[str, list[str]] = {}
    for note_text, channel in rows:
        found.setdefault(note_text, []).append(channel)
    return found


def entry_numbers_with_gaps(engine: Engine) -> dict[str, str]:
    """Incidents whose timeline numbers are not exactly 1..n: INC-n -> what they are."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT i.number, i.last_entry_number, count(e.id), "
                "min(e.number), max(e.number), count(DISTINCT e.number) "
                "FROM incidents i LEFT JOIN timeline_entries e ON e.incident_id = i.id "
                "GROUP BY i.id, i.number, i.last_entry_number"
            )
        ).all()
    return {
        f"INC-{number}": f"{count} entries numbered {low}..{high}, {distinct} distinct, last {last}"
        for number, last, count, low, high, distinct in rows
        if count and (low, high, distinct, last) != (1, count, count, count)
    }


@dataclass
class Tally:
    """The answers set against the database, with the counts a failure message shows."""

    sent: int
    acknowledged: list[Answer]
    refused: list[Answer]  # answered, but not "recorded"
    unanswered: list[Answer]
    stored: dict[str, list[str]]

    @classmethod
    def of(cls, answers: Sequence[Answer], engine: Engine) -> Tally:
        return cls(
            sent=len(answers),
            acknowledged=[a for a in answers if a.recorded_in is not None],
            refused=[a for a in answers if a.status is not None and a.recorded_in is None],
            unanswered=[a for a in answers if a.status is None],
            stored=stored_notes(engine),
        )

    def copies(self, answer: Answer) -> list[str]:
        return self.stored.get(answer.note.text, [])

    def summary(self) -> str:
        stored = sum(len(channels) for channels in self.stored.values())
        refused_stored = sum(1 for a in self.refused if self.copies(a))
        unanswered_stored = sum(1 for a in self.unanswered if self.copies(a))
        replies = Counter(a.reply[:60] for a in self.refused).most_common(3)
        return (
            f"{self.sent} notes sent: {len(self.acknowledged)} acknowledged as recorded, "
            f"{len(self.refused)} answered otherwise ({refused_stored} of them stored anyway; "
            f"replies {replies}), {len(self.unanswered)} unanswered ({unanswered_stored} of "
            f"them stored); {stored} note entries in the database"
        )

    def check(self, incidents: dict[str, str]) -> None:
        """Acknowledged: stored once, in its channel's incident. Anything else: never twice."""
        lost = [a.note.text for a in self.acknowledged if not self.copies(a)]
        doubled = [a.note.text for a in self.acknowledged if len(self.copies(a)) > 1]
        misplaced = [
            a.note.text
            for a in self.acknowledged
            if self.copies(a) != [a.note.channel] and len(self.copies(a)) == 1
        ]
        wrong_reply = [
            (a.note.text, a.recorded_in)
            for a in self.acknowledged
            if a.recorded_in != incidents[a.note.channel]
        ]
        others_doubled = [
            a.note.text for a in [*self.refused, *self.unanswered] if len(self.copies(a)) > 1
        ]
        sent = {a.note.text for a in [*self.acknowledged, *self.refused, *self.unanswered]}
        phantoms = sorted(set(self.stored) - sent)
        summary = self.summary()
        assert not lost, f"acknowledged but not stored: {lost[:10]} ({len(lost)}); {summary}"
        assert not doubled, f"acknowledged and stored twice: {doubled[:10]}; {summary}"
        assert not misplaced, f"stored in another channel's incident: {misplaced[:10]}; {summary}"
        assert not wrong_reply, f"reply named the wrong incident: {wrong_reply[:10]}; {summary}"
        assert not others_doubled, f"unacknowledged, stored twice: {others_doubled}; {summary}"
        assert not phantoms, f"stored but never sent: {phantoms[:10]}; {summary}"


# --- 1. two servers, thousands of notes --------------------------------------------------

CHANNELS = [f"C0WORK{n:04d}" for n in range(4)]
NOTES = 2000
CLIENTS = 24


def test_notes_sent_to_two_servers_at_once_are_each_stored_exactly_once(
    servers: Servers, shared_database: Database, fake_slack: FakeSlack
) -> None:
    pair = [servers.start("a"), servers.start("b")]
    incidents = start_incidents(fake_slack, pair[0], CHANNELS)
    # Client thread i sends notes i, i + CLIENTS, ...: each thread keeps to one channel and
    # alternates between the servers, so every incident is written to through both at once.
    notes = [
        Note(text=f"n{n:05d}", channel=CHANNELS[n % len(CHANNELS)], server=(n // CLIENTS) % 2)
        for n in range(NOTES)
    ]
    stream = Stream(fake=fake_slack, ports=[s.port for s in pair], clients=CLIENTS)

    stream.run(notes)

    tally = Tally.of(stream.answers, shared_database.engine)
    by_server = Counter(pair[a.note.server].name for a in tally.acknowledged)
    print(f"\n{tally.summary()}; acknowledged by server {dict(by_server)}")  # noqa: T201
    assert not stream.unsent, f"{len(stream.unsent)} notes never sent; {tally.summary()}"
    tally.check(incidents)
    # No fault was injected: every note got an answer, and every answer was one a person reads.
    assert not tally.unanswered, f"{tally.unanswered[:3]}; {tally.summary()}"
    assert {a.status for a in stream.answers} == {200}, tally.summary()
    assert not [a for a in tally.refused if "could not record" not in a.reply], tally.summary()
    assert all(server.process.poll() is None for server in pair)
    assert entry_numbers_with_gaps(shared_database.engine) == {}


# --- 2. two starts for one channel, one on each server ----------------------------------


def test_racing_starts_on_two_servers_open_one_incident_and_name_it_to_the_other(
    servers: Servers, shared_database: Database, fake_slack: FakeSlack
) -> None:
    pair = [servers.start("a"), servers.start("b")]
    channels = [f"C0RACE{n:04d}" for n in range(10)]
    replies: dict[str, list[tuple[str, int, str]]] = {}

    for channel in channels:
        barrier = threading.Barrier(2, timeout=30)

        def start(
            server: Server, user: str, channel: str = channel, barrier: threading.Barrier = barrier
        ) -> tuple[str, int, str]:
            client = Client(server.port)
            try:
                client.connect()  # connected before the barrier: only the request is raced
                barrier.wait()
                status, reply = client.command(
                    slash(fake_slack, channel, user), f"start Race in {channel} via {server.name}"
                )
                return server.name, status, reply
            finally:
                client.close()

        with ThreadPoolExecutor(max_workers=2) as pool:
            replies[channel] = list(pool.map(start, pair, [ALICE, BOB]))

    with shared_database.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT channel_id, number, status, title FROM incidents ORDER BY number")
        ).all()
    by_channel: dict[str, list[tuple[int, str, str]]] = {}
    for channel, number, status, title in rows:
        by_channel.setdefault(channel, []).append((number, status, title))
    winners = Counter[str]()
    for channel in channels:
        answers = replies[channel]
        assert [status for _name, status, _reply in answers] == [200, 200], answers
        opened = [(name, r) for name, _s, r in answers if re.match(r"^INC-\d+ opened: ", r)]
        refused = [r for _name, _s, r in answers if "is already open" in r]
        assert len(opened) == 1 and len(refused) == 1, f"{channel}: {answers}"
        winner, opened_reply = opened[0]
        reference = opened_reply.split(" ", 1)[0]
        assert refused == [f"{reference} is already open in this channel."], answers
        assert by_channel.get(channel) == [
            (int(reference.removeprefix("INC-")), "open", f"Race in {channel} via {winner}")
        ], f"{channel}: {by_channel.get(channel)}; replies {answers}"
        winners[winner] += 1
    print(f"\nstarts won by server: {dict(winners)}")  # noqa: T201
    assert sorted(row.number for row in rows) == list(range(1, len(channels) + 1)), rows


# --- 3. kill -9 in the middle of a stream, then start again -----------------------------

KILL_CHANNELS = ["C0KILL0001", "C0KILL0002"]
KILL_NOTES = 1200
KILL_AFTER = 400  # acknowledged notes before the kill
KILL_CLIENTS = 12


@pytest.mark.parametrize("victim", ["server", "worker"])
def test_every_note_acknowledged_around_a_kill_9_is_stored_exactly_once(
    victim: str, servers: Servers, shared_database: Database, fake_slack: FakeSlack
) -> None:
    """Both kinds of kill -9, each in the middle of the stream.

    `worker`: SIGKILL to one gunicorn worker, as the OOM killer would; the arbiter starts a
    new one by itself. `server`: SIGKILL to the arbiter and its workers at once (its process
    group), as when the machine dies: every in-flight request dies wherever it was, nothing
    listens until `serve` is started again on the same port. Killing only the arbiter would
    leave its workers serving as orphans, which tests neither.
    """
    current = [servers.start("victim")]
    incidents = start_incidents(fake_slack, current[0], KILL_CHANNELS)
    phase = ["before"]
    acknowledged = Counter[str]()
    halfway = threading.Event()
    lock = threading.Lock()

    def count(answer: Answer) -> None:
        with lock:
            if answer.recorded_in is not None:
                acknowledged[answer.phase] += 1
            if acknowledged["before"] >= KILL_AFTER:
                halfway.set()

    notes = [
        Note(text=f"k{n:05d}", channel=KILL_CHANNELS[n % len(KILL_CHANNELS)], server=0)
        for n in range(KILL_NOTES)
    ]
    stream = Stream(
        fake=fake_slack,
        ports=[current[0].port],  # the same port after the restart
        clients=KILL_CLIENTS,
        phase=lambda: phase[0],
        on_answer=count,
    )
    background = ThreadPoolExecutor(max_workers=1)
    running = background.submit(stream.run, notes)
    try:
        deadline = time.monotonic() + STREAM_LIMIT_S
        while not halfway.wait(0.1):
            assert not running.done(), f"the stream ended early: {running.exception()!r}"
            assert time.monotonic() < deadline, f"never reached {KILL_AFTER} acknowledged notes"
        victim_pid = current[0].process.pid
        if victim == "server":
            phase[0] = "during"
            current[0].kill_everything()
            current[0] = servers.start("victim-again", port=current[0].port)
        else:
            workers = current[0].workers()
            assert len(workers) == WORKERS, workers
            victim_pid = workers[0]
            phase[0] = "during"
            os.kill(victim_pid, signal.SIGKILL)
            deadline = time.monotonic() + READY_LIMIT_S
            while victim_pid in current[0].workers() or len(current[0].workers()) < WORKERS:
                assert time.monotonic() < deadline, f"no new worker:\n{current[0].tail()}"
                time.sleep(0.05)
        phase[0] = "after"
    except BaseException:
        stream.stopped.set()  # the server may never come back: do not wait for the limit
        raise
    finally:
        background.shutdown(wait=True)  # the stream stops by itself: its loops are bounded
    running.result()  # the stream's own failure, if it had one

    tally = Tally.of(stream.answers, shared_database.engine)
    phases = Counter(a.phase for a in tally.unanswered)
    print(  # noqa: T201
        f"\nkill -9 of the {victim} (pid {victim_pid}): {tally.summary()}; acknowledged by "
        f"phase {dict(acknowledged)}; unanswered by phase {dict(phases)}"
    )
    assert not stream.unsent, f"{len(stream.unsent)} notes never sent; {tally.summary()}"
    tally.check(incidents)
    assert acknowledged["after"] > 0, f"nothing acknowledged after the restart; {tally.summary()}"
    assert entry_numbers_with_gaps(shared_database.engine) == {}


# --- 4. a postmortem a killed worker left unpublished ----------------------------------


def test_a_postmortem_left_pending_is_published_once_by_the_workers_that_start_next(
    servers: Servers, shared_database: Database, fake_slack: FakeSlack
) -> None:
    # A close committed as a worker does before it answers; the worker then died, and its
    # claim on the publication lapsed (NOW lies weeks before the servers' clocks).
    sessions = make_session_factory(shared_database.engine)
    with sessions() as session:
        incident = use_cases.start_incident(
            session,
            team_id=TEAM,
            channel_id="C0LOST0001",
            user_id=ALICE,
            title="Checkout is failing",
            started_at=NOW,
            timezone="UTC",
            now=NOW,
        )
        session.flush()
        use_cases.close_incident(
            session, incident=incident, closed_at=NOW, user_id=ALICE, text="fixed", now=NOW
        )
        session.commit()

    # Both workers of a new server sweep at start-up, at once.
    server = servers.start("after-the-crash")
    assert fake_slack.wait_for("files.completeUploadExternal", 1, timeout=READY_LIMIT_S)
    server.stop()  # what either worker was still doing is done or given up

    uploads = fake_slack.calls_to("files.completeUploadExternal")
    assert [u.params["channel_id"] for u in uploads] == ["C0LOST0001"]
    assert len(fake_slack.calls_to("chat.postMessage")) == 1
    with sessions() as session:
        assert session.scalars(select_rows(Publication.pending)).all() == [False]
