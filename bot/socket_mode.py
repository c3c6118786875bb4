"""`incident-bot socket`'s end of Slack's Socket Mode: Bolt's handler on a client that
reconnects as soon as Slack closes the connection, answering commands in Slack's time."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.slack.middleware import COMMAND_DEADLINE_S, answering

# slack_sdk's default as Bolt's handler sets it: the seconds between pings, and between the
# monitor's checks that the connection is still open.
PING_INTERVAL_S = 10


class IncidentSocketModeClient(SocketModeClient):
    """slack_sdk's built-in client, opening a new connection as soon as Slack closes one.

    On Slack's close frame, slack_sdk asks whether it is still connected before the closed
    connection has let go of its socket, finds it is, and opens nothing; its monitor opens
    one at its next check, up to `PING_INTERVAL_S` later. Meanwhile no command reaches the
    bot, and the answer of one being carried out has no connection to go on and is lost.

    It also notes when each slash command arrives (`arrived`).
    """

    def __init__(self, **kwargs: Any) -> None:
        self._arrivals: dict[str, float] = {}
        self._arrivals_lock = threading.Lock()
        super().__init__(**kwargs)

    def enqueue_message(self, message: str) -> None:
        # Called as the message is read off the connection. Envelopes wait in a queue, and
        # for a free worker, before they are handled, and Slack counts its 3 seconds from
        # before either.
        arrived = time.monotonic()
        if '"slash_commands"' in message:  # read only those, twice
            try:
                envelope = json.loads(message)
            except ValueError:
                envelope = None  # slack_sdk's own reading says what is wrong with it
            if (
                isinstance(envelope, dict)
                and envelope.get("type") == "slash_commands"
                and envelope.get("envelope_id")
            ):
                with self._arrivals_lock:
                    self._arrivals[str(envelope["envelope_id"])] = arrived
        super().enqueue_message(message)

    def arrived(self, envelope_id: str) -> float | None:
        """When (time.monotonic()) the slash command of this envelope arrived; once only."""
        with self._arrivals_lock:
            return self._arrivals.pop(envelope_id, None)

    def _run_current_session(self) -> None:
        session = self.current_session
        was_open = session is not None and session.is_active()
        super()._run_current_session()  # type: ignore[no-untyped-call]  # returns once it ends
        if (
            not was_open
            or session is not self.current_session  # replaced by a new one already
            or self.is_connected()
            or self.closed
            or not self.auto_reconnect_enabled  # stopping, or a first start that failed
        ):
            return
        try:
            self.connect_to_new_endpoint()
        except Exception as error:  # the monitor tries again at its next check
            self.logger.error(
                "Could not open a new Socket Mode connection: %s: %s", type(error).__name__, error
            )


class IncidentSocketModeHandler(SocketModeHandler):
    """Bolt's Socket Mode handler on `IncidentSocketModeClient`, giving a slash command the
    time to answer that is left since it arrived (COMMAND_DEADLINE_S), not since a worker
    took it: one taken late was carried out after Slack had told the person it failed.
    Events and shortcuts keep theirs from when they are taken: a pin, or a message added
    by the shortcut, is kept once however often it comes."""

    client: IncidentSocketModeClient

    def __init__(self, app: App, app_token: str, *, concurrency: int) -> None:
        # As Bolt's __init__, which builds slack_sdk's own client (starting its threads).
        self.app = app
        self.app_token = app_token
        self.client = IncidentSocketModeClient(
            app_token=app_token,
            logger=app.logger,
            web_client=app.client,
            proxy=app.client.proxy,
            ping_interval=PING_INTERVAL_S,
            concurrency=concurrency,
        )
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]

    def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        with answering(COMMAND_DEADLINE_S, since=self.client.arrived(req.envelope_id)):
            super().handle(client, req)
