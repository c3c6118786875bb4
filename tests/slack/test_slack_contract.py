"""Slack's documented contract, as another implementation of it may exercise it: event
retries and their order, thread lookups, edits that Slack itself makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bot.app import build_app
from bot.demo import RESPONSE_URL, FakeSlack, Fault, signed_event
from bot.services import build_services
from tests.conftest import ALICE, BOB, CHANNEL, SECRET, TEAM, Bot, Clock, Database, make_settings
from tests.slack.test_capture import PIN_TS, entries, message_changed, reaction


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


def test_deleting_a_pinned_thread_parent_keeps_its_entry(bot: Bot) -> None:
    # A message with replies is not removed when it is deleted: Slack puts a tombstone in
    # its place and tells apps with `message_changed`, not `message_deleted`.
    bot.command("start Outage")
    ts = bot.fake.post(CHANNEL, "rolling back deploy 4512", user=ALICE, ts=PIN_TS)
    bot.fake.post(CHANNEL, "ok", user=BOB, ts="1795154460.000200", thread_ts=ts)
    reaction(bot, ts)
    tombstone = {
        "type": "message",
        "subtype": "tombstone",
        "text": "This message was deleted.",
        "user": "USLACKBOT",
        "hidden": True,
        "ts": ts,
        "thread_ts": ts,
        "parent_user_id": "USLACKBOT",
        "reply_count": 1,
    }
    assert message_changed(bot, tombstone, previous_text="rolling back").status == 200

    [entry] = entries(bot)
    assert entry.text == "rolling back deploy 4512"


def test_a_pin_on_a_message_deleted_before_it_is_read_is_answered_and_not_sent_again(
    bot: Bot,
) -> None:
    # The message is gone by the time the event is handled: conversations.history lists
    # nothing, and conversations.replies answers thread_not_found, as it does for a `ts` that
    # is no message. Slack's retries would find it as gone: the event is answered, not failed.
    bot.command("start Outage")
    ts = bot.fake.post(CHANNEL, "said, pinned, deleted", user=ALICE, ts=PIN_TS)
    bot.fake.react(CHANNEL, ts, "pushpin", BOB)
    del bot.fake.messages[(CHANNEL, ts)]
    event = {
        "type": "reaction_added",
        "user": BOB,
        "reaction": "pushpin",
        "item": {"type": "message", "channel": CHANNEL, "ts": ts},
        "item_user": ALICE,
        "event_ts": "1795154500.000100",
    }

    assert bot.dispatch(*signed_event(SECRET, event, team_id=TEAM)).status == 200
    bot.wait()

    assert entries(bot, live=False) == []
    assert bot.fake.calls_to("reactions.add") == []


def test_a_pin_the_app_lacks_the_scope_to_read_is_answered_and_not_sent_again(bot: Bot) -> None:
    # An install made before the manifest asked for groups:history cannot read a private
    # channel's messages: Slack's retries of the event would be refused the same way.
    bot.command("start Outage")
    ts = bot.fake.post(CHANNEL, "said in a private channel", user=ALICE, ts=PIN_TS)
    missing = {"needed": "groups:history", "provided": "commands,chat:write"}
    bot.fake.fail("conversations.history", Fault(error="missing_scope", details=missing))

    assert reaction(bot, ts).status == 200
    bot.wait()

    assert entries(bot, live=False) == []
    assert len(bot.fake.calls_to("conversations.history")) == 1


class ParentFirstSlack(FakeSlack):
    """conversations.replies as documented: "an entire thread (a message plus all the messages
    in reply to it)", the parent first on the first page, and counted in `limit`."""

    def _history(self, params: dict[str, Any], *, replies: bool) -> dict[str, Any]:
        answer = super()._history(params, replies=replies)
        channel = str(params.get("channel", ""))
        with self._lock:
            asked = self.messages.get((channel, str(params.get("ts", "")))) or {}
            parent = self.messages.get((channel, str(asked.get("thread_ts", ""))))
        if replies and parent is not None:
            rest = [m for m in answer["messages"] if m["ts"] != parent["ts"]]
            answer["messages"] = [dict(parent), *rest][: int(params.get("limit") or 100)]
        return answer


def bot_against(fake_class: type[FakeSlack], database: Database, clock: Clock) -> Iterator[Bot]:
    """The real app against a stand-in for Slack that answers in its own (documented) way."""
    fake = fake_class(users={ALICE: "Africa/Nairobi"}, team_id=TEAM).start()
    settings = make_settings(database.url, fake.api_url)
    services = build_services(settings, engine=database.engine, clock=clock, create_schema=False)
    yield Bot(app=build_app(settings, services), services=services, fake=fake, clock=clock)
    fake.stop()


@pytest.fixture
def parent_first(database: Database, clock: Clock) -> Iterator[Bot]:
    yield from bot_against(ParentFirstSlack, database, clock)


def test_a_pinned_thread_reply_is_found_when_replies_lists_the_parent_first(
    parent_first: Bot,
) -> None:
    bot = parent_first
    bot.command("start Outage")
    parent = bot.fake.post(CHANNEL, "thread start", user=ALICE, ts=PIN_TS)
    reply_ts = bot.fake.post(
        CHANNEL, "found it: bad deploy", user=BOB, ts="1795154460.000200", thread_ts=parent
    )
    reaction(bot, reply_ts)
    bot.wait()
    assert [entry.text for entry in entries(bot)] == ["found it: bad deploy"]


def test_a_channel_where_posting_is_restricted_is_not_blamed_on_membership(bot: Bot) -> None:
    # restricted_action: the workspace lets only some people post there (#general set to
    # admins only, an announcement channel). The bot is a member; an invitation changes nothing.
    bot.fake.fail("chat.postMessage", Fault(error="restricted_action"))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()
    responses = bot.fake.wait_for_responses(2)
    assert any(r.get("response_type") == "in_channel" and "INC-1" in r["text"] for r in responses)
    told = " ".join(r["text"] for r in responses)
    assert "restricted_action" in told
    assert "not a member" not in told and "/invite" not in told


@pytest.mark.parametrize(
    "event",
    [
        {"type": "app_uninstalled"},
        {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["U0BOT00001"]}},
    ],
)
def test_uninstall_events_are_answered_on_a_single_token(bot: Bot, event: dict[str, Any]) -> None:
    # manifest.yaml subscribes to both in either mode; a 404 would be sent again by Slack.
    body, headers = signed_event(SECRET, {**event, "event_ts": "1795154500.000100"}, team_id=TEAM)

    assert bot.dispatch(body, headers).status == 200
    assert [call.method for call in bot.fake.calls if call.method != "auth.test"] == []


class ShortPagesSlack(ParentFirstSlack):
    """conversations.history and .replies paged as Slack's pagination guide allows: "fewer
    than the requested number of items may be returned, even if the end of the list hasn't
    been reached"; `response_metadata.next_cursor` says where the next page starts."""

    def _history(self, params: dict[str, Any], *, replies: bool) -> dict[str, Any]:
        answer = super()._history({**params, "limit": "1000"}, replies=replies)
        start = int(params.get("cursor") or 0)
        more = start + 1 < len(answer["messages"])
        return {
            **answer,
            "messages": answer["messages"][start : start + 1],
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + 1) if more else ""},
        }


@pytest.fixture
def short_pages(database: Database, clock: Clock) -> Iterator[Bot]:
    yield from bot_against(ShortPagesSlack, database, clock)


def test_a_pinned_thread_reply_on_the_second_page_of_replies_is_found(short_pages: Bot) -> None:
    bot = short_pages
    bot.command("start Outage")
    parent = bot.fake.post(CHANNEL, "thread start", user=ALICE, ts=PIN_TS)
    reply_ts = bot.fake.post(
        CHANNEL, "found it: bad deploy", user=BOB, ts="1795154460.000200", thread_ts=parent
    )

    assert reaction(bot, reply_ts).status == 200
    bot.wait()

    assert [entry.text for entry in entries(bot)] == ["found it: bad deploy"]
    pages = [call.params.get("cursor") for call in bot.fake.calls_to("conversations.replies")]
    assert pages == [None, "1"]  # the second page, asked for by its cursor
    assert [c.params["timestamp"] for c in bot.fake.calls_to("reactions.add")] == [reply_ts]


def test_a_rate_limited_response_url_is_tried_again_as_slack_asks(bot: Bot) -> None:
    # Slack limits how fast one may post to a response URL (429 with Retry-After), and the
    # close in a channel the bot is not in sends two answers back to back through it.
    bot.fake.members_only.add(CHANNEL)
    bot.fake.private.add(CHANNEL)
    bot.fake.fail(RESPONSE_URL, Fault(status=429, error="rate_limited", retry_after=1))
    bot.command("start Outage")
    bot.command("close")
    bot.wait()

    responses = bot.fake.wait_for_responses(2)
    assert any(r.get("response_type") == "in_channel" and "INC-1" in r["text"] for r in responses)
    assert any("Invite me with /invite" in r["text"] for r in responses)


def test_an_unfurl_delivered_after_an_edit_does_not_bring_back_the_old_text(bot: Bot) -> None:
    # Slack announces its own changes to a message (a link unfurled, a reply counted) as
    # `message_changed` too, carrying the message as it was then: before an edit, no `edited`.
    bot.command("start Outage")
    ts = bot.fake.post(CHANNEL, "rollback: https://ci.example/4512", user=ALICE, ts=PIN_TS)
    unfurled = {
        **bot.fake.messages[(CHANNEL, ts)],
        "attachments": [{"title": "Build 4512", "from_url": "https://ci.example/4512"}],
    }
    reaction(bot, ts)
    edited = bot.fake.edit(CHANNEL, ts, "rollback of 4512 failed: https://ci.example/4512")
    assert message_changed(bot, edited, previous_text="rollback").status == 200

    assert message_changed(bot, unfurled, previous_text="rollback").status == 200

    [entry] = entries(bot)
    assert entry.text == "rollback of 4512 failed: https://ci.example/4512"


def test_a_pinned_alert_from_an_app_is_credited_to_the_app(bot: Bot) -> None:
    # An app's incoming webhook posts with no `user`, and `username` only when the payload
    # overrides it; Slack names the poster in `bot_profile`.
    bot.command("start Checkout slow")
    bot.fake.messages[(CHANNEL, PIN_TS)] = {
        "type": "message",
        "subtype": "bot_message",
        "text": "[FIRING:1] HighLatency checkout p99 4.2s",
        "ts": PIN_TS,
        "bot_id": "B0GRAFANA1",
        "app_id": "A0GRAFANA1",
        "bot_profile": {"id": "B0GRAFANA1", "app_id": "A0GRAFANA1", "name": "Grafana"},
    }

    reaction(bot, PIN_TS)
    bot.wait()

    [entry] = entries(bot)
    assert (entry.author_id, entry.author_name) == ("B0GRAFANA1", "Grafana")


class FewReactionsSlack(FakeSlack):
    """reactions.get as documented: only `full` promises "the complete reaction list"."""

    def _answer(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        answer = super()._answer(method, params, token)
        full = str(params.get("full", "")).lower() in ("1", "true")
        if method == "reactions.get" and answer.get("ok") and not full:
            answer["message"]["reactions"] = answer["message"].get("reactions", [])[:1]
        return answer


@pytest.fixture
def few_reactions(database: Database, clock: Clock) -> Iterator[Bot]:
    yield from bot_against(FewReactionsSlack, database, clock)


def test_the_entry_stays_while_pinned_among_other_reactions(few_reactions: Bot) -> None:
    bot = few_reactions
    bot.command("start Outage")
    ts = bot.fake.post(CHANNEL, "important", user=ALICE, ts=PIN_TS)
    bot.fake.react(CHANNEL, ts, "eyes", ALICE)
    reaction(bot, ts, user=BOB)
    reaction(bot, ts, user=ALICE)
    reaction(bot, ts, user=BOB, added=False)  # Alice's pin is still there

    assert [entry.text for entry in entries(bot)] == ["important"]
