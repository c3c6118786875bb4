"""An incident as its Slack channel changes: a new id, archived, unarchived, deleted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from bot.demo import Fault, signed_event
from bot.models import Incident, Postmortem
from tests.conftest import ALICE, BOB, CHANNEL, SECRET, TEAM, Bot, Reply
from tests.slack.test_capture import PIN_TS, entries, reaction

PRIVATE = "G0PRIV0001"
SHARED = "C0SHARED01"  # the same channel once shared with Slack Connect


def channel_event(bot: Bot, event: dict[str, Any], *, team: str = TEAM) -> Reply:
    body, headers = signed_event(SECRET, event, team_id=team)
    return bot.dispatch(body, headers)


def id_changed(bot: Bot, old: str, new: str, *, team: str = TEAM) -> Reply:
    event = {
        "type": "channel_id_changed",
        "old_channel_id": old,
        "new_channel_id": new,
        "event_ts": f"{bot.clock.now.timestamp():.6f}",
    }
    return channel_event(bot, event, team=team)


def channels_of(bot: Bot) -> list[tuple[str, str]]:
    with bot.services.sessions() as session:
        return [
            (incident.reference, incident.channel_id)
            for incident in session.scalars(select(Incident).order_by(Incident.id))
        ]


def test_an_incident_follows_its_channel_to_its_new_id(bot: Bot) -> None:
    # Sharing a private channel with Slack Connect gives it a new id for good; Slack says so
    # once, and from then on every command and event from the channel carries the new one.
    bot.command("start First", channel=PRIVATE)
    bot.command("close", channel=PRIVATE)
    bot.command("start Second", channel=PRIVATE)
    ts = bot.fake.post(PRIVATE, "rolled back", user=ALICE, ts=PIN_TS)
    reaction(bot, ts, channel=PRIVATE)
    bot.command("start Elsewhere", channel=PRIVATE, team="T0OTHER001")
    bot.wait()

    assert id_changed(bot, PRIVATE, SHARED).status == 200

    assert channels_of(bot) == [("INC-1", SHARED), ("INC-2", SHARED), ("INC-1", PRIVATE)]
    reply = bot.command("note still rolling back", channel=SHARED)
    assert "INC-2" in reply.text
    # The pinned message is the same message under the channel's new id: unpinning it there
    # takes it off the timeline.
    bot.fake.messages[(SHARED, ts)] = bot.fake.messages[(PRIVATE, ts)]
    reaction(bot, ts, channel=SHARED, user=BOB, added=False)
    bot.wait()
    assert [e.text for e in entries(bot)] == ["still rolling back"]


OTHER = "C0OTHER001"


def archive(bot: Bot, channel: str = CHANNEL) -> None:
    """Archive a channel in Slack: archiving takes the bot out of it, and no one can type
    a slash command there any more."""
    bot.fake.archived.add(channel)
    bot.fake.members_only.add(channel)


def leave_alone(_: Bot) -> None:
    pass


def archive_private(bot: Bot) -> None:
    bot.fake.private.add(CHANNEL)
    bot.fake.archived.add(CHANNEL)  # the bot is still a member: Slack shows it the channel


def status_of(bot: Bot, number: int = 1, *, team: str = TEAM) -> tuple[str, list[str]]:
    with bot.services.sessions() as session:
        query = select(Incident).where(Incident.number == number, Incident.team_id == team)
        incident = session.scalars(query).one()
        texts = [e.text for e in incident.entries if e.deleted_at is None]
        return incident.status, texts


def test_an_incident_whose_channel_was_archived_is_closed_from_another_channel_by_name(
    bot: Bot,
) -> None:
    bot.command("start Checkout is down")
    bot.command("note 9:10 AM - rolled back")
    archive(bot)

    reply = bot.command("close inc-1 9:30 AM - channel archived before the close", channel=OTHER)

    assert reply.status == 200 and "INC-1" in reply.text
    assert status_of(bot) == ("closed", ["rolled back", "channel archived before the close"])
    bot.wait()
    # The summary and the postmortem go where the close was typed: the archived channel
    # takes nothing.
    [summary] = bot.fake.calls_to("chat.postMessage")
    assert summary.params["channel"] == OTHER and "INC-1" in summary.params["text"]
    [upload] = bot.fake.calls_to("files.completeUploadExternal")
    assert upload.params["channel_id"] == OTHER
    assert b"rolled back" in next(iter(bot.fake.uploads.values()))


def test_naming_the_channels_own_incident_closes_it_as_usual(bot: Bot) -> None:
    bot.command("start Checkout is down")
    reply = bot.command("close INC-1 fixed")
    assert "INC-1" in reply.text
    assert status_of(bot) == ("closed", ["fixed"])
    bot.wait()
    assert bot.fake.calls_to("conversations.info") == []


@pytest.mark.parametrize(
    ("where", "typed", "prepare", "told"),
    [
        # Its channel is still there to close it in: closing from elsewhere could close the
        # wrong incident by a typo, and post its postmortem where its people are not.
        (OTHER, "close INC-1 fixed", leave_alone, "close it there"),
        (OTHER, "close INC-7 fixed", archive, "There is no INC-7"),
        ("D0DIRECT01", "close INC-1 fixed", archive, "in a channel"),
        # A private channel's timeline is not posted in another channel.
        (OTHER, "close INC-1 fixed", archive_private, "private"),
        (OTHER, "close INC-1", lambda bot: bot.fake.deleted.add(CHANNEL), "channel_not_found"),
        (
            OTHER,
            "close INC-1",
            lambda bot: bot.fake.fail("conversations.info", Fault(status=500, times=5)),
            "try again",
        ),
    ],
    ids=["not_archived", "unknown", "direct_message", "private", "deleted", "slack_fails"],
)
def test_closing_another_channels_incident_is_refused_unless_its_channel_is_archived(
    bot: Bot, where: str, typed: str, prepare: Callable[[Bot], None], told: str
) -> None:
    bot.command("start Checkout is down")
    prepare(bot)

    reply = bot.command(typed, channel=where)

    assert reply.status == 200 and not reply.in_channel
    assert told in reply.text and "Nothing was recorded" in reply.text
    assert status_of(bot) == ("open", [])
    bot.wait()
    assert bot.fake.calls_to("chat.postMessage") == []


def test_closing_an_incident_that_is_already_closed_by_name_says_so(bot: Bot) -> None:
    bot.command("start Checkout is down")
    bot.command("close")
    bot.wait()
    archive(bot)
    reply = bot.command("close INC-1 again", channel=OTHER)
    assert "INC-1 is already closed" in reply.text
    assert status_of(bot) == ("closed", [])


def delete(bot: Bot, channel: str = CHANNEL, *, private: bool = False) -> Reply:
    """Delete a channel in Slack: it no longer knows it, and says so by an event, a private
    one's only to its members (the bot among them here)."""
    bot.fake.deleted.add(channel)
    kind = "group_deleted" if private else "channel_deleted"
    return channel_event(bot, {"type": kind, "channel": channel})


def test_an_incident_whose_channel_was_deleted_is_closed_from_another_channel_by_name(
    bot: Bot,
) -> None:
    bot.command("start Checkout is down")
    bot.command("note 9:10 AM - rolled back")
    bot.command("start Elsewhere", team="T0OTHER001")  # the same channel id, another workspace

    assert delete(bot).status == 200

    listed = bot.command("list", channel=OTHER).visible
    assert "its channel was deleted" in listed and "/incident close INC-1" in listed
    reply = bot.command("close INC-1 9:30 AM - the channel went with it", channel=OTHER)
    assert reply.status == 200 and "INC-1" in reply.text
    assert status_of(bot) == ("closed", ["rolled back", "the channel went with it"])
    bot.wait()
    # Slack knows the channel no more: nothing to ask it, and the postmortem goes where the
    # close was typed.
    assert bot.fake.calls_to("conversations.info") == []
    [summary] = bot.fake.calls_to("chat.postMessage")
    assert summary.params["channel"] == OTHER and "INC-1" in summary.params["text"]
    [upload] = bot.fake.calls_to("files.completeUploadExternal")
    assert upload.params["channel_id"] == OTHER
    assert b"rolled back" in next(iter(bot.fake.uploads.values()))
    # The other workspace's channel of the same id was not deleted.
    refused = bot.command("close INC-1", channel=OTHER, team="T0OTHER001")
    assert "Nothing was recorded" in refused.text
    assert status_of(bot, team="T0OTHER001") == ("open", [])


@pytest.mark.parametrize("where", [OTHER, "D0DIRECT01"], ids=["channel", "direct_message"])
def test_a_deleted_private_channels_incident_is_closed_by_name_and_posted_nowhere(
    bot: Bot, where: str
) -> None:
    # Only the channel's members saw its timeline, and with the channel gone none can: its
    # summary and postmortem are kept, and shown to no one in another channel.
    bot.command("start Payroll export leaks", channel=PRIVATE)
    bot.command("note 9:10 AM - secret detail", channel=PRIVATE)
    assert delete(bot, PRIVATE, private=True).status == 200

    reply = bot.command("close INC-1 contained", channel=where)

    assert reply.status == 200 and not reply.in_channel
    assert "INC-1* is closed" in reply.text and "posted nowhere" in reply.text
    assert "secret detail" not in reply.text
    assert status_of(bot) == ("closed", ["secret detail", "contained"])
    bot.wait()
    assert bot.fake.calls_to("chat.postMessage") == []
    assert bot.fake.calls_to("files.completeUploadExternal") == []
    assert bot.fake.calls_to("conversations.info") == []
    with bot.services.sessions() as session:
        [kept] = session.scalars(select(Postmortem)).all()
        assert "secret detail" in kept.markdown


def test_a_channel_deleted_event_after_group_deleted_leaves_the_channel_private(bot: Bot) -> None:
    bot.command("start Payroll export leaks", channel=PRIVATE)
    delete(bot, PRIVATE, private=True)
    delete(bot, PRIVATE)  # a second word, as a public channel: it was private

    reply = bot.command("close INC-1", channel=OTHER)

    assert "posted nowhere" in reply.text and status_of(bot) == ("closed", [])
    bot.wait()
    assert bot.fake.calls_to("chat.postMessage") == []
