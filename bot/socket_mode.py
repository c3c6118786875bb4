"""`incident-bot socket`'s end of Slack's Socket Mode: Bolt's handler on a client that
reconnects as soon as Slack closes the connection."""

from __future__ import annotations

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.socket_mode.builtin import SocketModeClient

# slack_sdk's default as Bolt's handler sets it: the seconds between pings, and between the
# monitor's checks that the connection is still open.
PING_INTERVAL_S = 10


class IncidentSocketModeClient(SocketModeClient):
    """slack_sdk's built-in client, opening a new connection as soon as Slack closes one.

    On Slack's close frame, slack_sdk asks whether it is still connected before the closed
    connection has let go of its socket, finds it is, and opens nothing; its monitor opens
    one at its next check, up to `PING_INTERVAL_S` later. Meanwhile no command reaches the
    bot, and the answer of one being carried out has no connection to go on and is lost.
    """

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
    """Bolt's Socket Mode handler on `IncidentSocketModeClient`."""

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
