"""People's time zones from Slack's `users.info`, cached, never holding up an acknowledgement."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk import WebClient

log = logging.getLogger(__name__)

# Slack gives a command 3 seconds; the database write needs some of them.
LOOKUP_TIMEOUT_S = 1.0
FOUND_TTL_S = 6 * 3600.0
# After a failed lookup, use the fallback for a while instead of waiting on Slack again.
FAILED_TTL_S = 600.0


class UserTimezones:
    """A cache of (workspace, user) -> IANA zone, filled by `users.info` in the background.

    `zone_for` waits at most `timeout` for Slack; a lookup that answers later still fills
    the cache for the next command. Anything unusable becomes the fallback zone.
    """

    def __init__(
        self,
        *,
        fallback: str,
        api_url: str,
        timeout: float = LOOKUP_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fallback = fallback
        self._api_url = api_url
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._pending: dict[tuple[str, str], Future[str | None]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tz-lookup")

    def zone_for(self, *, team_id: str, user_id: str, token: str | None) -> ZoneInfo:
        """The person's zone, or the fallback when Slack does not answer in time."""
        key = (team_id, user_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > self._clock():
                return ZoneInfo(cached[0])
            future = self._pending.get(key)
            if future is None:
                future = self._executor.submit(self._lookup, key, token)
                self._pending[key] = future
        try:
            zone = future.result(timeout=self._timeout)
        except FutureTimeout:
            log.warning(
                "users.info for %s took over %.1fs; using %s", user_id, self._timeout, self.fallback
            )
            zone = None
        return ZoneInfo(zone or self.fallback)

    def _lookup(self, key: tuple[str, str], token: str | None) -> str | None:
        zone: str | None = None
        try:
            client = WebClient(
                token=token, base_url=self._api_url, timeout=int(self._timeout * 3) or 1
            )
            response = client.users_info(user=key[1])
            candidate = (response.get("user") or {}).get("tz")
            if isinstance(candidate, str) and candidate:
                ZoneInfo(candidate)
                zone = candidate
        except (ZoneInfoNotFoundError, ValueError):
            log.warning("users.info gave an unknown zone for %s; using %s", key[1], self.fallback)
        except Exception as error:  # any Slack or network failure means "use the fallback"
            log.warning("users.info failed for %s: %s; using %s", key[1], error, self.fallback)
        with self._lock:
            ttl = FOUND_TTL_S if zone else FAILED_TTL_S
            self._cache[key] = (zone or self.fallback, self._clock() + ttl)
            self._pending.pop(key, None)
        return zone
