"""manifest.yaml asks Slack for what the app uses: its scopes, events, command and shortcut."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bot.app import BOT_SCOPES
from bot.demo import signed_event
from bot.slack.capture import SHORTCUT_CALLBACK_ID
from tests.conftest import SECRET, TEAM, Bot

MANIFEST = (Path(__file__).resolve().parent.parent / "manifest.yaml").read_text(encoding="utf-8")


def _list_under(key: str) -> list[str]:
    """The `- item` lines of a YAML list under `key:` (the manifest is plain enough for this)."""
    lines = MANIFEST.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"{key}:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    items = []
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if len(line) - len(line.lstrip()) <= indent:
            break
        if stripped.startswith("- "):
            items.append(stripped[2:].split("#", 1)[0].strip())
    return items


def test_the_manifest_asks_for_exactly_the_scopes_the_app_installs_with() -> None:
    assert _list_under("bot") == list(BOT_SCOPES)


def test_the_manifest_subscribes_to_the_events_the_app_listens_to() -> None:
    assert set(_list_under("bot_events")) == {
        "reaction_added",
        "reaction_removed",
        "message.channels",
        "message.groups",
        "channel_id_changed",
        "channel_deleted",
        "group_deleted",
        "app_uninstalled",
        "tokens_revoked",
    }


def test_the_manifest_declares_the_command_and_the_shortcut() -> None:
    assert "- command: /incident" in MANIFEST
    assert re.search(rf"callback_id: {SHORTCUT_CALLBACK_ID}\b", MANIFEST)
    assert "should_escape: true" in MANIFEST


def test_the_app_does_not_ask_to_post_in_channels_it_is_not_in() -> None:
    # It posts only where /incident was typed and in the channels it creates. Where it is not
    # a member, it joins (channels:join) and then posts, as the postmortem's upload needs it
    # to be a member anyway; chat:write.public would only let the token post in any channel.
    assert "chat:write.public" not in BOT_SCOPES  # nor in the manifest: it lists the same


def test_every_event_the_manifest_subscribes_to_is_answered_by_the_app(bot: Bot) -> None:
    # Slack counts an event answered other than 200 as failed, sends it again, and turns
    # off an app's subscriptions that keep failing: Bolt answers 404 where nothing listens.
    for subscribed in _list_under("bot_events"):
        kind, _, where = subscribed.partition(".")
        event: dict[str, Any] = {"type": kind, "event_ts": "1795154400.000100"}
        if kind == "message":
            event.update(channel="C0TEST0001", user="U0ALICE001", text="hi", ts="1.2")
            event["channel_type"] = {"channels": "channel", "groups": "group"}[where]
        if kind.startswith("reaction_"):
            item = {"type": "message", "channel": "C0TEST0001", "ts": "1.2"}
            event.update(user="U0ALICE001", reaction="tada", item=item)
        if kind == "channel_id_changed":
            event.update(old_channel_id="G0OLD00001", new_channel_id="C0NEW00001")
        if kind in ("channel_deleted", "group_deleted"):
            event["channel"] = "C0GONE0001"
        if kind == "tokens_revoked":
            event["tokens"] = {"bot": ["U0BOT00001"]}
        body, headers = signed_event(SECRET, event, team_id=TEAM)
        assert bot.dispatch(body, headers).status == 200, subscribed
