"""Channels' names from Slack's `conversations.info`, cached, never holding up an answer.

Slack sends a channel mention in a message as `<#C0123ABCD>` (and, in a command's text,
sometimes as `<#C0123ABCD|>`): the id alone, which no one reading a postmortem knows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from slack_sdk.errors import SlackApiError

from bot.slack.lookups import MAX_LOOKUPS, Asked, Lookups
from bot.slack.lookups import client as lookup_client
from bot.slack.people import FAILED_TTL_S, FOUND_TTL_S, retry_after

log = logging.getLogger(__name__)


class ChannelDirectory:
    """A cache of (workspace, channel) -> name, filled by `conversations.info` in the
    background. All the lookups of one text wait together (`Asked.wait`), at most a second,
    and no longer than the request being answered can spare; one that answers later fills
    the cache. A channel Slack does not name (`channel_not_found`, `missing_scope`, a rate
    limit, no answer) is left out, and its mention keeps its id."""

    def __init__(self, *, api_url: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._api_url = api_url
        self._lookups: Lookups[str | None] = Lookups(
            self._lookup, threads=MAX_LOOKUPS, name="conversations-info", clock=clock
        )

    def ask(
        self, *, team_id: str, channel_ids: Iterable[str], token: str | None
    ) -> Asked[str | None]:
        """Ask Slack for these channels' names (a few at most), None for those it does not
        give; `Asked.wait` gives the answers."""
        return self._lookups.ask(team_id=team_id, ids=channel_ids, token=token)

    def _lookup(self, channel_id: str, token: str | None) -> tuple[str | None, float]:
        name: str | None = None
        failed_for = FAILED_TTL_S
        try:
            client = lookup_client(api_url=self._api_url, token=token)
            channel = client.conversations_info(channel=channel_id).get("channel") or {}
            candidate = channel.get("name") if isinstance(channel, dict) else None
            # A direct message has no name (`user` instead): its mention keeps the id.
            if isinstance(candidate, str) and candidate.strip():
                name = candidate.strip()
        except SlackApiError as error:
            log.warning("conversations.info failed for %s: %s; keeping its id", channel_id, error)
            failed_for = retry_after(error)
        except Exception as error:  # any other failure (network, timeout) keeps the id
            log.warning("conversations.info failed for %s: %s; keeping its id", channel_id, error)
        return name, FOUND_TTL_S if name else failed_for


def names(channels: dict[str, str | None]) -> dict[str, str]:
    """The names among `channels`' answers (without `#`), by channel id."""
    return {channel_id: name for channel_id, name in channels.items() if name}
