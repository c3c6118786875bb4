"""The application factory: settings and services in, a wired Bolt `App` out."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot.config import Settings
from bot.services import Services, web_client
from bot.slack import register


def build_app(
    settings: Settings, services: Services, *, token_verification_enabled: bool = True
) -> App:
    """The Bolt app with every listener registered; nothing is decorated at import time."""
    app = App(
        signing_secret=settings.slack_signing_secret,
        client=web_client(settings, settings.slack_bot_token),
        # Run listeners to completion before answering: the acknowledgement is sent only
        # after the entry is committed, and Bolt does not poll for ack() every 10 ms.
        process_before_response=True,
        token_verification_enabled=token_verification_enabled,
        logger=logging.getLogger("bot.bolt"),
    )
    register(app, services)
    return app
