"""The application factory: settings and services in, a wired Bolt `App` out."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.authorize import InstallationStoreAuthorize
from slack_bolt.context import BoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.oauth.callback_options import FailureArgs
from slack_bolt.oauth.oauth_flow import OAuthFlow
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_bolt.request.internals import build_context
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import SQLAlchemyOAuthStateStore
from slack_sdk.signature import SignatureVerifier
from sqlalchemy import select

from bot.config import Settings
from bot.services import Services, SlackClient, web_client
from bot.slack import register, replies
from bot.slack.middleware import COMMAND_DEADLINE_S, answering
from bot.slack.publish import TOKEN_REFUSED

# The bot scopes requested on install; manifest.yaml lists the same ones.
BOT_SCOPES = (
    "commands",
    "chat:write",
    "files:write",
    "channels:join",
    "users:read",
    "reactions:read",
    "reactions:write",
    "channels:history",
    "groups:history",
    "channels:manage",
    "channels:read",
    "groups:read",
)
OAUTH_STATE_EXPIRATION_S = 600
# Expired OAuth states forgotten each time one is issued: more than one, so that states
# left before are forgotten too, few, so that issuing one stays cheap.
STATES_FORGOTTEN_PER_ISSUE = 2
log = logging.getLogger(__name__)
# The logger of slack_sdk's WebhookClient, which answers through response URLs: ours (tell)
# and Bolt's respond().
WEBHOOK_CLIENT_LOGGER = "slack_sdk.webhook.client"


class IncidentApp(App):
    """Bolt's `App`, reading every form body as Slack sent it.

    Bolt takes any form body that contains the word "payload" anywhere for an interactivity
    payload, finds no `payload` field in it, and reads the request as empty, so
    `/incident note payload API returns 500` went unanswered. Such a body is read again as
    the form it is before Bolt dispatches it; the signature check, inside the dispatch, still
    reads the raw body.

    Every request is answered when its listener returns, within Slack's 3 seconds: the Web
    API calls made meanwhile (Bolt's auth.test, the listener's) wait on a rate limit, or on
    a slow Slack, only as long as that allows (see `services.RateLimitRetryHandler` and
    `services.SlackClient`).

    An HTTP request is answered 401 unless it is signed with the signing secret, before Bolt
    looks at it: Bolt's own check raised on a malformed timestamp or signature (a 500 and an
    error in the log), and logged the whole body of every request it refused, response URL
    and verification token included. Ours replaces Bolt's (`request_verification_enabled`
    is off in `build_app`). With no secret given (`verify_requests_with`), every HTTP request
    is refused. Slack's `ssl_check`, which Bolt answers before its own check, is left to Bolt.
    """

    _verifier: SignatureVerifier | None = None

    def verify_requests_with(self, signing_secret: str) -> None:
        """Refuse, before Bolt, any HTTP request not signed with `signing_secret`."""
        self._verifier = SignatureVerifier(signing_secret)

    def dispatch(self, req: BoltRequest) -> BoltResponse:
        if req.mode == "http" and not self._signed(req) and req.body.get("ssl_check") != "1":
            log.info("refused a request whose signature is missing, malformed, stale or wrong")
            return BoltResponse(status=401, body={"error": "invalid request"})
        if req.mode == "http" and not req.body and "payload" in req.raw_body:
            form = dict(parse_qsl(req.raw_body, keep_blank_values=True))
            if "payload" not in form:
                req.body = form
                req.context = build_context(req.context, form)
        with answering(within=COMMAND_DEADLINE_S):
            return super().dispatch(req)

    def _signed(self, req: BoltRequest) -> bool:
        """Whether the request carries Slack's signature of its body, made in the last
        5 minutes; the timestamp must be a whole number and the signature ASCII, which
        the SDK's check assumes."""
        timestamp = (req.headers.get("x-slack-request-timestamp") or [""])[0]
        signature = (req.headers.get("x-slack-signature") or [""])[0]
        if self._verifier is None or not re.fullmatch(r"[0-9]{1,20}", timestamp):
            return False
        if not signature.isascii():
            return False
        return self._verifier.is_valid(req.raw_body, timestamp, signature)

    def _init_context(self, req: BoltRequest) -> None:
        super()._init_context(req)
        # Bolt gives each request a plain WebClient of its own, made from the app's; the
        # listeners' calls must give up when the answer is due, as the app's client's do.
        if isinstance(self.client, SlackClient):
            token, team_id = req.context.client.token, req.context.team_id
            req.context["client"] = self.client.copy(token=token, team_id=team_id)


class IncidentOAuthFlow(OAuthFlow):
    """Bolt's OAuth flow, whose callback answers with its failure page, not a bare 500, when
    Slack cannot be reached to finish the install or the database cannot keep it: Bolt
    catches only Slack's own error answers there."""

    def handle_callback(self, request: BoltRequest) -> BoltResponse:
        try:
            return super().handle_callback(request)
        except Exception as error:  # a dropped link, a timeout, the database
            log.warning("could not finish an install: %s", error, exc_info=True)
            return self.failure_handler(
                FailureArgs(
                    request=request,
                    reason="slack_or_database_unreachable",
                    error=error,
                    suggested_status_code=503,
                    settings=self.settings,
                    default=self.default_callback_options,
                )
            )


class ExpiringOAuthStateStore(SQLAlchemyOAuthStateStore):
    """slack_sdk's state store, forgetting states that expired.

    Anyone can ask for `/slack/install`, and each answer keeps a state for the callback;
    slack_sdk deletes one only when an install uses it, so those of installs no one
    finished (or a script asking for the page) would pile up for good. Each new state
    forgets a few of the oldest once they have expired: ids grow with time and every state
    lives as long, so those are the oldest ids, found by the primary key alone.
    """

    def issue(self, *args: Any, **kwargs: Any) -> str:
        state = str(super().issue(*args, **kwargs))
        c = self.oauth_states.c
        oldest = (
            select(c.id)
            .order_by(c.id)
            .limit(STATES_FORGOTTEN_PER_ISSUE)
            # PostgreSQL: two install pages at once neither wait for nor deadlock on each
            # other's rows; SQLite has one writer at a time.
            .with_for_update(skip_locked=True)
        )
        # The store keeps naive UTC times.
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.engine.begin() as connection:
            connection.execute(
                self.oauth_states.delete().where(c.id.in_(oldest), c.expire_at <= now)
            )
        return state


class AuthorizationUnavailableError(Exception):
    """Slack or the database could not say, just now, whether the app is installed."""


class EventRetryingAuthorize(InstallationStoreAuthorize):
    """Bolt's authorize, except for an event whose workspace could not be confirmed just now.

    Bolt takes a failed lookup (auth.test rate limited or failing, the installation store not
    answering) for "not installed" and answers 200. A command's response URL then tells the
    person to try again, but an event answered 200 is never sent again, and a pin is lost.
    Such an event raises instead: Bolt answers 500 and Slack sends it again. An event from a
    workspace with no installation, or whose token Slack refuses, is answered 200 as before.
    """

    def __call__(
        self,
        *,
        context: BoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **actor: str | None,
    ) -> AuthorizeResult | None:
        found = super().__call__(
            context=context, enterprise_id=enterprise_id, team_id=team_id, user_id=user_id, **actor
        )
        if found is not None or context.response_url is not None:
            return found
        # Asked again without Bolt's catch-alls: a database that does not answer raises here.
        bot = self.installation_store.find_bot(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=context.is_enterprise_install,
        )
        if bot is None or not bot.bot_token:
            return None
        try:
            checked = context.client.auth_test(token=bot.bot_token)
        except SlackApiError as error:
            code = error.response.get("error")
            if code in TOKEN_REFUSED:
                return None
            raise AuthorizationUnavailableError(f"auth.test failed: {code}") from error
        found = AuthorizeResult.from_auth_test_response(
            auth_test_response=checked,
            bot_token=bot.bot_token,
            user_token=None,
            bot_scopes=bot.bot_scopes,
            user_scopes=None,
        )
        if self.cache_enabled:
            self.authorize_result_cache[bot.bot_token] = found
        return found


def build_app(
    settings: Settings, services: Services, *, token_verification_enabled: bool = True
) -> App:
    """The Bolt app with every listener registered; nothing is decorated at import time.

    With SLACK_CLIENT_ID and SLACK_CLIENT_SECRET it serves `/slack/install` and
    `/slack/oauth_redirect`, keeps installations and OAuth state in the database (so any
    worker can finish an install another one started) and answers each workspace with its
    own token. Otherwise it runs on SLACK_BOT_TOKEN alone.
    """
    logger = logging.getLogger("bot.bolt")
    if _UNUSED_TOKEN not in logger.filters:
        logger.addFilter(_UNUSED_TOKEN)
    quiet_response_urls()
    client = web_client(settings, None if settings.multi_workspace else settings.slack_bot_token)
    if settings.multi_workspace:
        installations = SQLAlchemyInstallationStore(
            client_id=settings.slack_client_id or "", engine=services.engine, logger=logger
        )
        oauth_settings = OAuthSettings(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret,
            scopes=list(BOT_SCOPES),
            installation_store=installations,
            state_store=ExpiringOAuthStateStore(
                expiration_seconds=OAUTH_STATE_EXPIRATION_S, engine=services.engine, logger=logger
            ),
        )
        # Bolt's default authorize calls auth.test on every request; cache its answer.
        authorize = EventRetryingAuthorize(
            installation_store=installations,
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret,
            logger=logger,
            bot_only=True,
            cache_enabled=True,
            client=client,
        )
        app = IncidentApp(
            signing_secret=settings.slack_signing_secret,
            # IncidentApp checks every HTTP request's signature before Bolt: a second check
            # would only cost another HMAC per request.
            request_verification_enabled=False,
            client=client,
            process_before_response=True,
            logger=logger,
            oauth_flow=IncidentOAuthFlow(client=client, logger=logger, settings=oauth_settings),
            installation_store=installations,
            # Bolt takes an Authorize instance here (App.__init__ checks for one), though its
            # annotation only names callables.
            authorize=authorize,  # type: ignore[arg-type]
            # Bolt's own says only "reinstall", also when auth.test was merely rate limited.
            user_facing_authorize_error_message=replies.NOT_AUTHORIZED,
        )
    else:
        app = IncidentApp(
            signing_secret=settings.slack_signing_secret,
            # IncidentApp checks every HTTP request's signature before Bolt: a second check
            # would only cost another HMAC per request.
            request_verification_enabled=False,
            client=client,
            # Run listeners to completion before answering: the acknowledgement is sent only
            # after the entry is committed, and Bolt does not poll for ack() every 10 ms.
            process_before_response=True,
            logger=logger,
            token_verification_enabled=token_verification_enabled,
            user_facing_authorize_error_message=replies.NOT_AUTHORIZED,
        )
    if settings.slack_signing_secret:
        app.verify_requests_with(settings.slack_signing_secret)
    # Bolt tries each listener's matchers in the order they were registered, for every
    # request: `/incident` first, and the rare uninstall events last.
    register(app, services)
    if settings.multi_workspace:
        app.enable_token_revocation_listeners()
    else:
        _acknowledge_uninstalls(app)
    return app


class _UnusedTokenWarning(logging.Filter):
    """Leaves out Bolt's warning that "`token` will be unused". Bolt reads SLACK_BOT_TOKEN
    from the environment itself and, as the app is built with a client, says at every start
    that it goes unused, though that client carries the same token: an operator who set it
    as README says was told it was ignored."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


_UNUSED_TOKEN = _UnusedTokenWarning()


def quiet_response_urls() -> None:
    """Keep response URLs out of the log: each lets whoever holds it post in its channel as
    the app for 30 minutes, and slack_sdk's WebhookClient notes every retry (a refused
    connection, a 5xx, a 429) at INFO with the whole URL. Its warnings name only the error."""
    logging.getLogger(WEBHOOK_CLIENT_LOGGER).setLevel(logging.WARNING)


def _acknowledge_uninstalls(app: App) -> None:
    """On SLACK_BOT_TOKEN alone there are no stored tokens to forget, but Slack still sends
    these events (manifest.yaml subscribes to them in either mode). Unanswered, they would be
    404s that Slack sends again and counts against the app's event delivery."""

    def handle_uninstall(event: dict[str, Any], body: dict[str, Any]) -> None:
        log.warning(
            "Slack says %s for workspace %s: SLACK_BOT_TOKEN no longer works there",
            event.get("type"),
            body.get("team_id"),
        )

    app.event("app_uninstalled")(handle_uninstall)
    app.event("tokens_revoked")(handle_uninstall)
