"""The Slack edge: listeners and middleware, wired onto a Bolt app by `register`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slack_bolt import App

    from bot.services import Services


def register(app: App, services: Services) -> None:
    """Wire every listener group onto `app`."""
    from bot.slack import capture, channels, commands

    commands.register(app, services)
    capture.register(app, services)
    channels.register(app, services)
