"""Reading a long incident costs a fixed number of SQL statements, whatever its length (no N+1).

Each test builds two incidents, of 200 and of 2,000 entries, and counts the statements the
engine sends while the bot answers: the counts must be equal, and small.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event, select

from bot import postmortem
from bot.models import Incident
from bot.services import RequestPruning
from tests.conftest import TEAM, Bot, add_entries

SIZES = (200, 2_000)
# Ceilings with room for new features (today: status 4-5, render 4-5, close and publish
# 27 on SQLite, BEGIN included: the publication is claimed, renewed before each call to
# Slack and finished in short transactions of their own, each taking the incident's row
# first); what is under test is that the counts do not grow with the size.
STATUS_STATEMENTS = 10
POSTMORTEM_STATEMENTS = 10
CLOSE_STATEMENTS = 30


@contextmanager
def counting(engine: Engine) -> Iterator[list[str]]:
    """The statements `engine` sends to the database while the block runs."""
    statements: list[str] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def incident_with_entries(bot: Bot, entries: int) -> str:
    """Open an incident in a channel of its own and give it `entries` notes; its channel."""
    channel = f"C0SIZE{entries:05d}"
    assert bot.command("start A long incident", channel=channel).status == 200
    add_entries(bot, entries, "the *queue* <depth> & retries", channel=channel)
    return channel


def statements_for(bot: Bot, run: Any) -> list[str]:
    with counting(bot.services.engine) as statements:
        run()
    return list(statements)


def test_status_reads_the_same_few_statements_for_200_and_2000_entries(bot: Bot) -> None:
    counts = {}
    for size in SIZES:
        channel = incident_with_entries(bot, size)

        def status(channel: str = channel, size: int = size) -> None:
            reply = bot.command("status", channel=channel)
            assert reply.status == 200
            assert f"{size} timeline entries" in reply.text

        counts[size] = len(statements_for(bot, status))

    assert counts[SIZES[0]] == counts[SIZES[1]], counts
    assert counts[SIZES[1]] <= STATUS_STATEMENTS, counts


def test_postmortem_render_reads_the_same_few_statements_for_200_and_2000_entries(
    bot: Bot,
) -> None:
    counts = {}
    for size in SIZES:
        channel = incident_with_entries(bot, size)

        def render(channel: str = channel, size: int = size) -> None:
            with bot.services.sessions() as session:
                incident = session.scalars(
                    select(Incident).where(Incident.team_id == TEAM, Incident.channel_id == channel)
                ).one()
                context = postmortem.build_context(session, incident=incident, now=bot.clock())
            markdown = postmortem.render(bot.services.templates, context)
            assert len(context.timeline) == size
            assert markdown.count("queue\\* \\<depth\\> & retries") == size

        counts[size] = len(statements_for(bot, render))

    assert counts[SIZES[0]] == counts[SIZES[1]], counts
    assert counts[SIZES[1]] <= POSTMORTEM_STATEMENTS, counts


def test_close_and_its_postmortem_read_the_same_statements_for_200_and_2000_entries(
    bot: Bot,
) -> None:
    # Forgetting old requests is work of its own, after some commands' answers: not in these.
    bot.services.pruning = RequestPruning(every=timedelta(days=1))
    channels = {size: incident_with_entries(bot, size) for size in SIZES}
    bot.clock.advance(hours=1)  # after every entry, so that the close is the last one
    counts = {}
    for size, channel in channels.items():

        def close(channel: str = channel) -> None:
            assert bot.command("close Resolved", channel=channel).status == 200
            bot.wait()  # the postmortem is rendered, stored and uploaded after the ack

        counts[size] = len(statements_for(bot, close))

    assert len(bot.fake.uploads) == len(SIZES)
    assert counts[SIZES[0]] == counts[SIZES[1]], counts
    assert counts[SIZES[1]] <= CLOSE_STATEMENTS, counts
