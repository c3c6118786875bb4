"""The HTTP app: `POST /slack/events` for Slack, `GET /healthz` and `/readyz` for load balancers.

`/healthz` (liveness) answers 200 when the database answers; `/readyz` (readiness) answers
200 only when, besides, the database's schema is the one this version was written for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.adapter.wsgi.http_request import WsgiHttpRequest
from sqlalchemy import Engine

from bot import db
from bot.config import Settings
from bot.services import FOLLOWUP_GRACE_S, Services

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
# A load balancer's check must not hang on a database that stopped answering.
HEALTH_DEADLINE_S = 1.5
# Slack's largest request, a message shortcut carrying a 40,000-character message with its
# blocks, is a fraction of this; anything larger is not read.
MAX_BODY_BYTES = 1024 * 1024
# A stopping worker is killed this long after it is told to stop. Its requests are answered
# within Slack's 3 seconds; then follow-up work (a close's postmortem) has FOLLOWUP_GRACE_S
# to end, and what has not is named in the log before the worker is killed.
GRACEFUL_TIMEOUT_S = 10

WsgiApp = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes]]
_Check = Callable[[Engine], tuple[int, dict[str, Any]]]


def _liveness(engine: Engine) -> tuple[int, dict[str, Any]]:
    """200 when the database answers."""
    healthy = db.ping(engine, timeout=HEALTH_DEADLINE_S)
    return (200 if healthy else 503), {"database": "ok" if healthy else "unreachable"}


def _readiness(engine: Engine) -> tuple[int, dict[str, Any]]:
    """200 when the database answers and its schema is current; else 503 and why."""
    try:
        with db.deadline(engine, HEALTH_DEADLINE_S):
            status = db.schema_status(engine)
    except Exception:
        return 503, {"database": "unreachable", "detail": "the database did not answer"}
    body: dict[str, Any] = {
        "database": "ok",
        "schema": status.state.value,
        "revision": list(status.revisions),
        "head": list(status.heads),
    }
    if status.is_current:
        return 200, body
    return 503, {**body, "detail": status.describe(), "fix": status.advice()}


_CHECKS: dict[str, _Check] = {"/healthz": _liveness, "/readyz": _readiness}


class UnreadableBodyError(Exception):
    """A request body Bolt could not read into a Slack payload."""


class _SlackHandler(SlackRequestHandler):
    """Bolt's WSGI adapter, telling a body it cannot read from a failure of the app.

    Bolt reads the body, and picks fields out of it, before it checks the signature: JSON
    that is not JSON, bytes that are not UTF-8, JSON that is not an object (`[1]`, `null`,
    `payload=7`) or is nested too deep raise there, for anyone who can reach the port. It
    reads the body of a GET of the install pages too.
    """

    def dispatch(self, request: WsgiHttpRequest) -> BoltResponse:
        return self.app.dispatch(_read(request))

    def handle_installation(self, request: WsgiHttpRequest) -> BoltResponse:
        assert self.app.oauth_flow is not None  # the adapter asks only when there is one
        return self.app.oauth_flow.handle_installation(_read(request))

    def handle_callback(self, request: WsgiHttpRequest) -> BoltResponse:
        assert self.app.oauth_flow is not None
        return self.app.oauth_flow.handle_callback(_read(request))


def _read(request: WsgiHttpRequest) -> BoltRequest:
    """The request as Bolt reads it; `UnreadableBodyError` when Bolt cannot."""
    try:
        return BoltRequest(
            body=request.get_body(), query=request.query_string, headers=request.get_headers()
        )
    except (ValueError, LookupError, TypeError, AttributeError, RecursionError) as error:
        raise UnreadableBodyError(type(error).__name__) from error


def build_wsgi(app: App, services: Services) -> WsgiApp:
    """Answer health checks ourselves and route everything else to Bolt's WSGI adapter."""
    slack = _SlackHandler(app, path=SLACK_PATH)

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        check = _CHECKS.get(environ.get("PATH_INFO", ""))
        if check is not None and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            status, body = check(services.engine)
            return _json(start_response, status, body)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            return _json(start_response, 413, {"error": "the body is too large"})
        try:
            return slack(environ, start_response)
        except UnreadableBodyError:
            # Slack never sends such a body.
            log.info("refused a body Bolt could not parse", exc_info=True)
            return _json(start_response, 400, {"error": "the body is not a Slack request"})

    return wsgi


def _json(start_response: StartResponse, status: int, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    reason = {
        200: "OK",
        400: "Bad Request",
        413: "Content Too Large",
        503: "Service Unavailable",
    }[status]
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


def serve(settings: Settings, *, host: str, port: int, workers: int, threads: int) -> None:
    """Run the bot under gunicorn: `workers` processes of `threads` threads each."""
    from bot.app import build_app
    from bot.services import build_services
    from bot.slack.publish import start_sweeper

    built: list[Services] = []

    def build() -> WsgiApp:
        # Each worker builds its own app: engines and thread pools must not cross a fork.
        services = build_services(settings, create_schema=False, request_threads=threads)
        built.append(services)
        wsgi = build_wsgi(build_app(settings, services), services)
        start_sweeper(services)  # what a stopped worker left unpublished
        return wsgi

    def finish() -> None:
        for services in built:
            services.stop(FOLLOWUP_GRACE_S)

    run_gunicorn(build, host=host, port=port, workers=workers, threads=threads, on_exit=finish)


def run_gunicorn(
    build: Callable[[], WsgiApp],
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    on_exit: Callable[[], None] | None = None,
) -> None:
    """Serve `build()`'s WSGI app under gunicorn's gthread workers (the benchmark uses it too).

    `on_exit` runs in each worker once it has answered its last request."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", 30)
            self.cfg.set("graceful_timeout", GRACEFUL_TIMEOUT_S)
            if on_exit is not None:
                self.cfg.set("worker_exit", lambda _server, _worker: on_exit())
            self.cfg.set("accesslog", None)
            # gunicorn >= 25 opens an admin socket at one path per user, which a second
            # `serve` on the same host would take over; the bot does not use it.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> WsgiApp:
            return build()  # in each worker, after the fork

    Server().run()
