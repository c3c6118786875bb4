"""The floor: a Bolt app that only acknowledges `/incident`, served like `incident-bot serve`.

Same server stack as `bot.web.serve` (gunicorn, gthread worker, the same workers, threads,
timeouts and no access log), the same WSGI adapter and signing secret, and Bolt configured
for speed: `process_before_response=True` (no 10 ms poll for `ack()`) and no token check
at start-up. Run as `python -m bench.bare --port N`; the secret comes from
SLACK_SIGNING_SECRET and Slack's Web API (called once, for `auth.test`) from SLACK_API_URL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from slack_bolt import Ack, App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient

from bot.web import SLACK_PATH, WsgiApp, run_gunicorn

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

BARE_TOKEN = "xoxb-bench-bare"


def build_bare_app(*, signing_secret: str, api_url: str) -> App:
    """A Bolt app whose one listener acknowledges `/incident` and does nothing else."""
    app = App(
        signing_secret=signing_secret,
        client=WebClient(token=BARE_TOKEN, base_url=api_url, timeout=10),
        process_before_response=True,
        token_verification_enabled=False,
        logger=logging.getLogger("bench.bare"),
    )

    def acknowledge(ack: Ack) -> None:
        ack()

    app.command("/incident")(acknowledge)
    return app


def build_wsgi(app: App) -> WsgiApp:
    """`/healthz` answered directly (for the readiness wait), the rest by Bolt's adapter."""
    slack = SlackRequestHandler(app, path=SLACK_PATH)
    healthy = json.dumps({"database": "none"}).encode()

    def wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("Content-Length", str(len(healthy)))],
            )
            return [healthy]
        return slack(environ, start_response)

    return wsgi


def serve(*, host: str, port: int, workers: int, threads: int) -> None:
    """Serve the bare app with the gunicorn settings `bot.web.serve` uses."""
    signing_secret = os.environ["SLACK_SIGNING_SECRET"]
    api_url = os.environ["SLACK_API_URL"]

    def build() -> WsgiApp:
        return build_wsgi(build_bare_app(signing_secret=signing_secret, api_url=api_url))

    gunicorn_serve(build, host=host, port=port, workers=workers, threads=threads)


def gunicorn_serve(
    build: Callable[[], WsgiApp], *, host: str, port: int, workers: int, threads: int
) -> None:
    """Run `build()`'s WSGI app on exactly the server stack `incident-bot serve` uses."""
    run_gunicorn(build, host=host, port=port, workers=workers, threads=threads)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    serve(host=args.host, port=args.port, workers=args.workers, threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
