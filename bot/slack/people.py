"""People from Slack's `users.info`: time zone and name, cached, never holding up an answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk.errors import SlackApiError

from bot.slack.lookups import MAX_LOOKUPS, Asked, Lookups, until
from bot.slack.lookups import client as lookup_client

log = logging.getLogger(__name__)

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


UNKNOWN = Person(zone=None, name=None)


class UserDirectory:
    """A cache of (workspace, user) -> `Person`, filled by `users.info` in the background.

    A lookup waits at most a second for Slack, and no longer than the request being answered
    can spare; one that answers later still fills the cache for the next command. Whatever
    cannot be learnt falls back: the zone to `fallback`, the name to the user id.
    """

    def __init__(
        self, *, fallback: str, api_url: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fallback = fallback
        self._api_url = api_url
        # A request asks about its writer and the people its text names (MAX_LOOKUPS) at once.
        self._lookups = Lookups(
            self._lookup, threads=MAX_LOOKUPS + 1, name="users-info", clock=clock
        )

    def person(self, *, team_id: str, user_id: str, token: str | None) -> Person:
        """What Slack says of the person; all unknown when it does not answer in time."""
        asked = self.ask(team_id=team_id, user_ids=[user_id], token=token)
        return asked.wait(until()).get(user_id, UNKNOWN)

    def ask(self, *, team_id: str, user_ids: Iterable[str], token: str | None) -> Asked[Person]:
        """Ask Slack about these people (a few at most); `Asked.wait` gives the answers."""
        return self._lookups.ask(team_id=team_id, ids=user_ids, token=token)

    def _lookup(self, user_id: str, token: str | None) -> tuple[Person, float]:
        person = UNKNOWN
        failed_for = FAILED_TTL_S
        try:
            client = lookup_client(api_url=self._api_url, token=token)
            user = client.users_info(user=user_id).get("user") or {}
            person = Person(
                zone=_zone(user.get("tz")),
                name=_name(user),
                is_bot=user.get("is_bot") is True,
                deactivated=user.get("deleted") is True,
            )
        except SlackApiError as error:
            if error.response.get("error") in NOT_A_PERSON:
                log.info("users.info: %s is %s", user_id, error.response.get("error"))
                person = Person(zone=None, name=None, unknown=True)
            else:
                log.warning("users.info failed for %s: %s; using fallbacks", user_id, error)
                failed_for = retry_after(error)
        except Exception as error:  # any other failure (network, timeout) means the fallbacks
            log.warning("users.info failed for %s: %s; using fallbacks", user_id, error)
        return person, FOUND_TTL_S if person.zone or person.name else failed_for


def names(people: dict[str, Person]) -> dict[str, str]:
    """The display names among `people`, by user id."""
    return {user_id: person.name for user_id, person in people.items() if person.name}


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
