"""Channels' names from Slack's `conversations.info`, cached, never holding up an answer.

Slack sends a channel mention in a message as `<#C0123ABCD>` (and, in a command's text,
sometimes as `<#C0123ABCD|>`): the id alone, which no one reading a postmortem knows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.slack.middleware import patience
from bot.slack.people import FAILED_TTL_S, FOUND_TTL_S, LOOKUP_TIMEOUT_S, retry_after

log = logging.getLogger(__name__)

# Channels looked up for one text: the others keep their ids. conversations.info is in
# Slack's Tier 3 (about 50 calls a minute), and a text naming dozens of channels must not
# use it all up.
MAX_LOOKUPS = 5


class ChannelDirectory:
    """A cache of (workspace, channel) -> name, filled by `conversations.info` in the
    background. All the lookups of one text wait together, at most `timeout`, and no longer
    than the request being answered can spare; one that answers later fills the cache.
    A channel Slack does not name (`channel_not_found`, `missing_scope`, a rate limit, no
    answer) is left out, and its mention keeps its id."""

    def __init__(
        self,
        *,
        api_url: str,
        timeout: float = LOOKUP_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api_url = api_url
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[str | None, float]] = {}
        self._pending: dict[tuple[str, str], Future[str | None]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(
            max_workers=MAX_LOOKUPS, thread_name_prefix="conversations-info"
        )

    def names(
        self, *, team_id: str, channel_ids: Iterable[str], token: str | None
    ) -> dict[str, str]:
        """The names Slack gives these channels (without `#`), of those it tells in time."""
        found: dict[str, str] = {}
        waiting: dict[str, Future[str | None]] = {}
        with self._lock:
            for channel_id in dict.fromkeys(channel_ids):
                key = (team_id, channel_id)
                cached = self._cache.get(key)
                if cached is not None and cached[1] > self._clock():
                    if cached[0]:
                        found[channel_id] = cached[0]
                    continue
                if len(waiting) >= MAX_LOOKUPS:
                    continue
                future = self._pending.get(key)
                if future is None:
                    future = self._executor.submit(self._lookup, key, token)
                    self._pending[key] = future
                waiting[channel_id] = future
        if not waiting:
            return found
        # Other calls to Slack may have used the request's time already; what follows (the
        # commit, the answer) still needs its share. The lookups run at once: one wait.
        until = time.monotonic() + patience(self._timeout)
        for channel_id, future in waiting.items():
            try:
                name = future.result(timeout=max(0.0, until - time.monotonic()))
            except FutureTimeout:
                log.warning("conversations.info for %s took too long; keeping its id", channel_id)
                continue
            if name:
                found[channel_id] = name
        return found

    def _lookup(self, key: tuple[str, str], token: str | None) -> str | None:
        name: str | None = None
        failed_for = FAILED_TTL_S
        try:
            client = WebClient(
                token=token,
                base_url=self._api_url,
                timeout=int(self._timeout * 3) or 1,
                # The text waits `timeout` at most; a retry that answers after it still
                # fills the cache for the next text that names the channel.
                retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
            )
            channel = client.conversations_info(channel=key[1]).get("channel") or {}
            candidate = channel.get("name") if isinstance(channel, dict) else None
            # A direct message has no name (`user` instead): its mention keeps the id.
            if isinstance(candidate, str) and candidate.strip():
                name = candidate.strip()
        except SlackApiError as error:
            log.warning("conversations.info failed for %s: %s; keeping its id", key[1], error)
            failed_for = retry_after(error)
        except Exception as error:  # any other failure (network, timeout) keeps the id
            log.warning("conversations.info failed for %s: %s; keeping its id", key[1], error)
        with self._lock:
            self._cache[key] = (name, self._clock() + (FOUND_TTL_S if name else failed_for))
            self._pending.pop(key, None)
        return name
