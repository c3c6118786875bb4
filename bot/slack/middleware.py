"""One database session per request, handed to the listener on the Bolt context.

Bolt's global middleware runs *before* the listener and cannot wrap it (its `next()` only
records that it was called), so the session is opened and closed around each listener
instead: `with_session` wraps a listener and owns the session's whole lifetime.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any

from slack_bolt import BoltContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

Listener = Callable[..., None]
# The database work of a command or shortcut must be done by then, or it is answered "could
# not record": Slack shows an error after 3 seconds, and the answer needs time to travel. No
# request waits on Slack's Retry-After past it either.
COMMAND_DEADLINE_S = 2.2

# What a request needs after a call to Slack (or its retry): the call itself, the commit,
# the answer. A call made while answering may take the time left less this.
AFTER_RETRY_S = 0.5

# When (time.monotonic()) the request this thread is handling must be answered; None in work
# done after the answer (follow-ups), which may wait as long as Slack asks.
_answer_by: ContextVar[float | None] = ContextVar("answer_by", default=None)


@contextmanager
def answering(within: float, *, since: float | None = None) -> Iterator[None]:
    """Handle a request that Slack needs answered within `within` seconds of `since` (its
    time.monotonic() on arrival; by default, now). Inside another `answering`, the earlier
    of the two times holds."""
    answer_by = (time.monotonic() if since is None else since) + within
    outer = _answer_by.get()
    token = _answer_by.set(answer_by if outer is None else min(outer, answer_by))
    try:
        yield
    finally:
        _answer_by.reset(token)


def time_left() -> float | None:
    """Seconds left to answer the request being handled; None outside one."""
    answer_by = _answer_by.get()
    return None if answer_by is None else answer_by - time.monotonic()


def patience(most: float) -> float:
    """How long a call to Slack may wait: `most`, or, while a request is being answered, no
    more than the time left less what the answer still needs (`AFTER_RETRY_S`), and never
    less than nothing."""
    left = time_left()
    return most if left is None else max(0.0, min(most, left - AFTER_RETRY_S))


def with_session(sessions: sessionmaker[Session]) -> Callable[[Listener], Listener]:
    """Wrap a listener so that `context["db"]` is a session that is closed when it returns."""

    def wrap(listener: Listener) -> Listener:
        @wraps(listener)
        def run(context: BoltContext, **kwargs: Any) -> None:
            with sessions() as session:
                context["db"] = session
                try:
                    listener(context=context, **kwargs)
                finally:
                    context.pop("db", None)

        return run

    return wrap


def rollback_quietly(session: Session) -> None:
    """Roll back after a database error; the connection may be gone, and the session is
    discarded either way."""
    try:
        session.rollback()
    except SQLAlchemyError:
        log.debug("rollback failed", exc_info=True)


def team_of(context: BoltContext, body: dict[str, Any]) -> str:
    """The workspace a request comes from. An org-wide (Enterprise Grid) install authorizes
    the organization, not a workspace, so Bolt's `context.team_id` is empty and the body's
    `team_id` (events) or `team.id` (shortcuts) names it, as slash commands' `team_id` does."""
    team = context.team_id or body.get("team_id") or (body.get("team") or {}).get("id")
    return str(team or "")
