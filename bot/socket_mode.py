"""`incident-bot socket`'s end of Slack's Socket Mode: Bolt's handler on a client that
reconnects as soon as Slack closes the connection, answering commands in Slack's time."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.slack.middleware import COMMAND_DEADLINE_S, answering

# slack_sdk's default as Bolt's handler sets it: the seconds between pings, and between the
# monitor's checks that the connection is still open.
PING_INTERVAL_S = 10
# After a connection that could not be opened (the network, a 5xx), the next try waits this
# long, doubling up to RETRY_MAX_S; the monitor checks every PING_INTERVAL_S.
RETRY_FIRST_S = PING_INTERVAL_S
RETRY_MAX_S = 300
# apps.connections.open's answers that no retry changes: the app-level token is not one, was
# revoked, or its workspace or app is gone (slack's Node SDK gives up on the same:
# UnrecoverableSocketModeStartError), or lacks connections:write.
TOKEN_REFUSALS = frozenset(
    {
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "user_removed_from_team",
        "team_disabled",
        "not_allowed_token_type",
        "missing_scope",
    }
)
LINK_DISABLED = (
    "Slack turned Socket Mode off for the app (link_disabled): turn it on again on the "
    "app's Socket Mode page at https://api.slack.com/apps, or run `incident-bot serve` "
    "with a Request URL"
)


class IncidentSocketModeClient(SocketModeClient):
    """slack_sdk's built-in client, opening a new connection as soon as Slack closes one.

    On Slack's close frame, slack_sdk asks whether it is still connected before the closed
    connection has let go of its socket, finds it is, and opens nothing; its monitor opens
    one at its next check, up to `PING_INTERVAL_S` later. Meanwhile no command reaches the
    bot, and the answer of one being carried out has no connection to go on and is lost.

    It also notes when each slash command arrives (`arrived`), and stops for good (`refused`,
    `stopped`) when Slack refuses the app-level token or turns Socket Mode off
    (`link_disabled`): slack_sdk would try again every ten seconds for ever, while nothing
    reaches the bot. Other failures are tried again, less and less often (RETRY_MAX_S).
    """

    def __init__(self, **kwargs: Any) -> None:
        self._arrivals: dict[str, float] = {}
        self._arrivals_lock = threading.Lock()
        self.refused: str | None = None  # why it stopped for good, naming what to fix
        self.stopped = threading.Event()  # set then (and by a signal, in `socket`)
        self._failures = 0  # connections in a row that could not be opened
        self._retry_at = 0.0  # time.monotonic() before which none is tried
        super().__init__(**kwargs)

    def refuse(self, why: str) -> None:
        """Open no more connections, and say why."""
        if self.refused is None:
            self.refused = why
            self.logger.error("Socket Mode stopped for good: %s", why)
        self.default_auto_reconnect_enabled = False
        self.auto_reconnect_enabled = False
        self.stopped.set()

    def issue_new_wss_url(self) -> str:
        try:
            return super().issue_new_wss_url()
        except SlackApiError as error:
            code = str(error.response.get("error", ""))
            if error.response.status_code == 200 and code in TOKEN_REFUSALS:
                self.refuse(
                    f"Slack refused SLACK_APP_TOKEN when asked for a connection "
                    f"(apps.connections.open: {code}): give it an app-level token with "
                    "connections:write, from the app's Basic Information page"
                )
            raise

    def connect_to_new_endpoint(self, force: bool = False) -> None:
        if self.refused is not None:
            return
        if not force and time.monotonic() < self._retry_at:
            return  # the monitor's next check may try
        try:
            super().connect_to_new_endpoint(force)
        except Exception:
            if self.refused is None:
                self._failures += 1
                wait = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self._failures - 1))
                self._retry_at = time.monotonic() + wait
                self.logger.warning("Socket Mode: the next try is in %d s or so", wait)
            raise
        self._failures, self._retry_at = 0, 0.0

    def enqueue_message(self, message: str) -> None:
        # Called as the message is read off the connection. Envelopes wait in a queue, and
        # for a free worker, before they are handled, and Slack counts its 3 seconds from
        # before either.
        arrived = time.monotonic()
        if '"link_disabled"' in message and _reason(message) == "link_disabled":
            # Not taken as slack_sdk takes a disconnect, as a reason to open a new one.
            self.refuse(LINK_DISABLED)
            return
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


def _reason(message: str) -> str | None:
    """A `disconnect` message's reason (`warning`, `refresh_requested`, `link_disabled`)."""
    try:
        found = json.loads(message)
    except ValueError:
        return None
    if isinstance(found, dict) and found.get("type") == "disconnect":
        return str(found.get("reason"))
    return None


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
