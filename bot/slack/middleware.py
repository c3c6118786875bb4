"""One database session per request, handed to the listener on the Bolt context.

Bolt's global middleware runs *before* the listener and cannot wrap it (its `next()` only
records that it was called), so the session is opened and closed around each listener
instead: `with_session` wraps a listener and owns the session's whole lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from slack_bolt import BoltContext
from sqlalchemy.orm import Session, sessionmaker

Listener = Callable[..., None]


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
