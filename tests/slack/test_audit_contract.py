"""Slack's documented contract, as another implementation of it may exercise it: event
retries and their order, thread lookups, edits that Slack itself makes."""

from __future__ import annotations

from bot.demo import Fault
from tests.conftest import ALICE, BOB, CHANNEL, Bot
from tests.slack.test_capture import PIN_TS, entries, reaction


def test_a_retried_pin_whose_reaction_is_gone_by_then_records_nothing(bot: Bot) -> None:
    # Slack retries an event the app failed (up to three times, over minutes); by the time a
    # retry arrives the person may have taken the pin off again, and that removal was
    # already handled (there was nothing to take off then).
    bot.command("start Outage")
    ts = bot.fake.post(CHANNEL, "pinned by mistake", user=ALICE, ts=PIN_TS)
    bot.fake.fail("conversations.history", Fault(status=500, times=3))
    assert reaction(bot, ts, user=BOB, event_id="Ev1").status == 500
    assert reaction(bot, ts, user=BOB, added=False).status == 200

    assert reaction(bot, ts, user=BOB, event_id="Ev1", retry_num=1).status == 200
    bot.wait()

    assert entries(bot, live=False) == []
    assert bot.fake.calls_to("reactions.add") == []  # no check mark on a message not pinned
