"""One database session per request, handed to the listener on the Bolt context.

Bolt's global middleware runs *before* the listener and cannot wrap it (its `next()` only
records that it was called), so the session is opened and closed around each listener
instead: `with_session` wraps a listener and owns the session's whole lifetime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from slack_bolt import BoltContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

Listener = Callable[..., None]
# The database work of a command or shortcut must be done by then, or it is answered "could
# not record": Slack shows an error after 3 seconds, and the answer needs time to travel.
COMMAND_DEADLINE_S = 2.2


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
