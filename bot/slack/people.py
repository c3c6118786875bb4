"""People from Slack's `users.info`: time zone and name, cached, never holding up an answer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.slack.middleware import patience

log = logging.getLogger(__name__)

# Slack gives a command 3 seconds; the database write needs some of them.
LOOKUP_TIMEOUT_S = 1.0
FOUND_TTL_S = 6 * 3600.0
# After a failed lookup, use the fallback for a while instead of waiting on Slack again.
FAILED_TTL_S = 600.0
# Slack's answers that there is no such person for this token: not a failure to retry.
NOT_A_PERSON = {"user_not_found", "user_not_visible"}
# Slackbot, under the same id in every workspace: an app, though users.info says
# `is_bot: false` of it ("Slackbot is special", Slack's user object).
SLACKBOT = "USLACKBOT"


@dataclass(frozen=True)
class Person:
    zone: str | None  # IANA name, None when unknown
    name: str | None  # display name, None when unknown
    is_bot: bool = False  # an app's bot user (Slack's `is_bot`)
    deactivated: bool = False  # Slack's `deleted`: no longer in the workspace
    unknown: bool = False  # Slack says there is no such user, or none the bot may see


class UserDirectory:
    """A cache of (workspace, user) -> `Person`, filled by `users.info` in the background.

    A lookup waits at most `timeout` for Slack, and no longer than the request being answered
    can spare; one that answers later still fills the cache for the next command. Whatever
    cannot be learnt falls back: the zone to `fallback`, the name to the user id.
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
        self._cache: dict[tuple[str, str], tuple[Person, float]] = {}
        self._pending: dict[tuple[str, str], Future[Person]] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="users-info")

    def name_for(self, *, team_id: str, user_id: str, token: str | None) -> str:
        """The person's display name, or `@<user id>` when Slack does not say."""
        return self.person(team_id=team_id, user_id=user_id, token=token).name or f"@{user_id}"

    def person(self, *, team_id: str, user_id: str, token: str | None) -> Person:
        """What Slack says of the person; all unknown when it does not answer in time."""
        key = (team_id, user_id)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
            future = self._pending.get(key)
            if future is None:
                future = self._executor.submit(self._lookup, key, token)
                self._pending[key] = future
        # Other calls to Slack may have used the request's time already; what follows the
        # lookup (the commit, the answer) still needs its share.
        wait = patience(self._timeout)
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            log.warning("users.info for %s took over %.1fs; using fallbacks", user_id, wait)
            return Person(zone=None, name=None)

    def _lookup(self, key: tuple[str, str], token: str | None) -> Person:
        person = Person(zone=None, name=None)
        failed_for = FAILED_TTL_S
        try:
            client = WebClient(
                token=token,
                base_url=self._api_url,
                timeout=int(self._timeout * 3) or 1,
                # The command waits `timeout` at most; a retry that answers after it still
                # fills the cache for the person's next command.
                retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
            )
            user = client.users_info(user=key[1]).get("user") or {}
            person = Person(
                zone=_zone(user.get("tz")),
                name=_name(user),
                is_bot=user.get("is_bot") is True,
                deactivated=user.get("deleted") is True,
            )
        except SlackApiError as error:
            if error.response.get("error") in NOT_A_PERSON:
                log.info("users.info: %s is %s", key[1], error.response.get("error"))
                person = Person(zone=None, name=None, unknown=True)
            else:
                log.warning("users.info failed for %s: %s; using fallbacks", key[1], error)
                failed_for = retry_after(error)
        except Exception as error:  # any other failure (network, timeout) means the fallbacks
            log.warning("users.info failed for %s: %s; using fallbacks", key[1], error)
        with self._lock:
            ttl = FOUND_TTL_S if person.zone or person.name else failed_for
            self._cache[key] = (person, self._clock() + ttl)
            self._pending.pop(key, None)
        return person


def retry_after(error: SlackApiError) -> float:
    """How long to use the fallbacks after `error`: as long as Slack asks, when it says."""
    if error.response.status_code == 429:
        try:
            return min(FAILED_TTL_S, float(error.response.headers.get("Retry-After", "")))
        except ValueError:
            pass
    return FAILED_TTL_S


def _zone(candidate: object) -> str | None:
    if not isinstance(candidate, str) or not candidate:
        return None
    try:
        ZoneInfo(candidate)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("America")
        log.warning("users.info gave an unknown zone %r", candidate)
        return None
    return candidate


def _name(user: dict[str, object]) -> str | None:
    profile = user.get("profile")
    fields = profile if isinstance(profile, dict) else {}
    for candidate in (
        fields.get("display_name"),
        fields.get("real_name"),
        user.get("real_name"),
        user.get("name"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None
