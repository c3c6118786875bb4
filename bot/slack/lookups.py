"""Answers from Slack's Web API per (workspace, id), cached, asked in the background.

`users.info` (people) and `conversations.info` (channels) are both used so: all the lookups
a request needs are asked at once and waited for together (`Asked.wait` with one `until`),
no longer than the request can spare; an answer that comes later fills the cache.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.slack.middleware import patience

log = logging.getLogger(__name__)

V = TypeVar("V")

# Slack gives a command 3 seconds; the database write needs some of them.
LOOKUP_TIMEOUT_S = 1.0
# Lookups asked for one text: the ids after them are left as they are. users.info is in
# Slack's Tier 4 (about 100 calls a minute), conversations.info in Tier 3 (about 50), and a
# text naming dozens must neither use them up nor wait on each.
MAX_LOOKUPS = 5


def client(*, api_url: str, token: str | None) -> WebClient:
    """A Web API client for one lookup. The request waits LOOKUP_TIMEOUT_S at most; an
    answer after it, a rate limit's retry included, still fills the cache for the next."""
    return WebClient(
        token=token,
        base_url=api_url,
        timeout=int(LOOKUP_TIMEOUT_S * 3),
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )


def until(most: float = LOOKUP_TIMEOUT_S) -> float:
    """When (time.monotonic()) the lookups of a request stop being waited for: `most` from
    now, or sooner when the request must be answered sooner (`middleware.patience`)."""
    return time.monotonic() + patience(most)


@dataclass
class Asked(Generic[V]):
    """The answers of one request's lookups: those cached, and those still on their way."""

    found: dict[str, V] = field(default_factory=dict)
    waiting: dict[str, Future[V]] = field(default_factory=dict)

    def wait(self, until: float) -> dict[str, V]:
        """The answers in by `until` (time.monotonic()); the others are left out."""
        for key, future in self.waiting.items():
            try:
                self.found[key] = future.result(timeout=max(0.0, until - time.monotonic()))
            except FutureTimeout:
                log.warning("no answer from Slack about %s in time; doing without", key)
        self.waiting = {}
        return self.found


class Lookups(Generic[V]):
    """A cache of (workspace, id) -> V, filled by `fetch(id, token)` on a few threads.

    `fetch` never raises: it answers a value and how long to keep it (short for a failure,
    so that Slack is not asked again at once, and as long as its Retry-After says)."""

    def __init__(
        self,
        fetch: Callable[[str, str | None], tuple[V, float]],
        *,
        threads: int,
        name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[V, float]] = {}
        self._pending: dict[tuple[str, str], Future[V]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    def ask(
        self, *, team_id: str, ids: Iterable[str], token: str | None, most: int = MAX_LOOKUPS
    ) -> Asked[V]:
        """Ask about `ids` (once each): the cached answers, and at most `most` lookups."""
        asked: Asked[V] = Asked()
        unique = list(dict.fromkeys(ids))
        if not unique:  # the usual case, on the busiest paths: no lock, no thread
            return asked
        with self._lock:
            for key_id in unique:
                key = (team_id, key_id)
                cached = self._cache.get(key)
                if cached is not None and cached[1] > self._clock():
                    asked.found[key_id] = cached[0]
                    continue
                if len(asked.waiting) >= most:
                    continue
                future = self._pending.get(key)
                if future is None:
                    future = self._executor.submit(self._run, key, token)
                    self._pending[key] = future
                asked.waiting[key_id] = future
        return asked

    def _run(self, key: tuple[str, str], token: str | None) -> V:
        value, keep_for = self._fetch(key[1], token)
        with self._lock:
            self._cache[key] = (value, self._clock() + keep_for)
            self._pending.pop(key, None)
        return value
