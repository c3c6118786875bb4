"""After a close is acknowledged: store the postmortem, post the summary, upload the file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import Enum
from http.client import HTTPException
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.oauth.installation_store.sqlalchemy import SQLAlchemyInstallationStore
from slack_sdk.webhook import WebhookClient
from sqlalchemy.exc import SQLAlchemyError

from bot import incidents, postmortem
from bot.models import Incident
from bot.services import Periodic, Services, retry_handlers, web_client
from bot.slack import replies
from bot.slack.replies import Reply

log = logging.getLogger(__name__)

# Slack could not be reached or did not answer in full: timeouts and refusals (OSError), an
# answer cut off mid-body (http.client.IncompleteRead), the SDK's own errors.
UNREACHABLE = (SlackClientError, OSError, HTTPException)
# Errors that mean the bot cannot post in this channel until someone invites it.
NOT_A_MEMBER = {"not_in_channel", "channel_not_found"}
# Errors that mean no one's invitation would let the bot post there, and why.
CANNOT_POST = {
    "is_archived": "this channel is archived",
    "restricted_action": "only some people may post in this channel",
}
# Errors that mean Slack no longer takes the bot's token at all (the app was uninstalled, its
# token revoked, the workspace deactivated it): nothing more will get through until it is
# reinstalled, but a command's response URL still answers in the channel.
TOKEN_REFUSED = {"invalid_auth", "token_revoked", "token_expired", "account_inactive"}
# The bot's own reaction that says "this message is on the timeline".
CONFIRMATION = "white_check_mark"
CONFIRMATION_FALLBACK = "memo"  # used when people pin with white_check_mark themselves


def confirmation_emoji(pin: str) -> str:
    return CONFIRMATION if pin != CONFIRMATION else CONFIRMATION_FALLBACK


def confirm_capture(
    services: Services, token: str | None, channel: str, ts: str, *, add: bool
) -> None:
    """Put the confirmation on a message that joined the timeline, or take it off one that
    left it; a failure is only logged."""
    confirm = confirmation_emoji(services.settings.timeline_emoji)
    client = web_client(services.settings, token)
    try:
        if add:
            client.reactions_add(channel=channel, timestamp=ts, name=confirm)
        else:
            client.reactions_remove(channel=channel, timestamp=ts, name=confirm)
    except SlackApiError as error:
        if error.response.get("error") not in ("already_reacted", "no_reaction"):
            log.warning("could not change the confirmation on %s: %s", ts, error)


class Attempt(Enum):
    """How an attempt at publishing a postmortem ended."""

    DONE = "done"  # published, or refused by Slack for good and said so in the channel
    RETRY = "retry"  # a later attempt could get past what stopped this one
    LOST = "lost"  # the publication is no longer this attempt's (reopened, taken over)


def publish_postmortem(
    services: Services,
    *,
    incident_id: int,
    reference: str,
    channel_id: str | None,
    token: str | None,
    response_url: str | None,
    claim: str,
) -> Attempt:
    """Render and keep the postmortem, then post the summary and the Markdown file, while
    `claim` holds the incident's pending publication; then record how the attempt ended
    (`incidents.finish_publication`): pending still after what a later attempt could get
    past, published otherwise."""
    attempt = _publish(
        services,
        incident_id=incident_id,
        reference=reference,
        channel_id=channel_id,
        token=token,
        response_url=response_url,
        claim=claim,
    )
    _finish(
        services,
        incident_id=incident_id,
        reference=reference,
        claim=claim,
        attempt=attempt,
        channel_id=channel_id,
        token=token,
    )
    return attempt


def _finish(
    services: Services,
    *,
    incident_id: int,
    reference: str,
    claim: str,
    attempt: Attempt,
    channel_id: str | None,
    token: str | None,
) -> None:
    if attempt is Attempt.LOST:
        log.info("the postmortem of %s is no longer this attempt's to publish", reference)
        return
    failed = attempt is Attempt.RETRY
    try:
        with services.sessions() as session:
            found = incidents.finish_publication(
                session, incident_id=incident_id, claim=claim, failed=failed, now=services.clock()
            )
            session.commit()
            attempts = found.attempts if found else 0
            pending = found is not None and found.pending
            retry_at = found.claimed_until if found else None
    except SQLAlchemyError:
        # Its claim lapses by itself, and the sweeper then tries again.
        log.warning("could not record how publishing %s went", reference, exc_info=True)
        return
    if found is None:
        log.warning("the postmortem of %s was taken over by another attempt", reference)
    elif pending:
        log.warning(
            "publishing the postmortem of %s failed (attempt %d of %d); trying again at %s",
            reference,
            attempts,
            incidents.PUBLICATION_ATTEMPTS,
            retry_at.isoformat() if retry_at else "once its claim lapses",
        )
    elif failed:
        give_up(
            services, reference=reference, attempts=attempts, channel_id=channel_id, token=token
        )


def give_up(
    services: Services, *, reference: str, attempts: int, channel_id: str | None, token: str | None
) -> None:
    """Say in the log, and in the channel where the close was typed (told at the close that
    it would be tried again) when the token still speaks there, that a postmortem is given up."""
    log.error(
        "gave up publishing the postmortem of %s after %d attempts; "
        "`incident-bot export %s` prints it",
        reference,
        attempts,
        reference,
    )
    if channel_id is None or token is None:  # posted nowhere (Incident.posts_in), or no token
        return
    told = replies.refusal(
        f"I gave up posting the postmortem of {reference} after {attempts} attempts (the "
        f"bot's log says why). `incident-bot export {reference}` prints it."
    )
    try:
        web_client(services.settings, token).chat_postMessage(
            channel=channel_id,
            text=told.text,
            blocks=[block.to_dict() for block in told.blocks],
            unfurl_links=False,
        )
    except UNREACHABLE as error:  # the log has said it
        log.warning("could not say in %s that %s was given up: %s", channel_id, reference, error)


def _publish(
    services: Services,
    *,
    incident_id: int,
    reference: str,
    channel_id: str | None,
    token: str | None,
    response_url: str | None,
    claim: str,
) -> Attempt:
    failure: str | None = None  # of the template, told once the session is closed
    try:
        with services.sessions() as session:
            held = incidents.hold_publication(
                session, incident_id=incident_id, claim=claim, now=services.clock()
            )
            if held is None:
                return Attempt.LOST
            summary_posted = held.summary_posted
            incident = session.get_one(Incident, incident_id)
            context = postmortem.build_context(session, incident=incident, now=services.clock())
            summary = replies.close_summary(
                incident,
                window=context.window.phrase,
                duration=context.window.duration,
                entries=len(context.timeline),
                actions=len(context.actions),
            )
            try:
                markdown = postmortem.render(services.templates, context)
            except Exception as error:  # a broken template in TEMPLATES_DIR must not lose the close
                log.exception("rendering the postmortem of %s failed", incident.reference)
                failure = postmortem.failure(services.templates, error, postmortem.Format.MARKDOWN)
                markdown = None
            if markdown is not None:
                incidents.record_postmortem(
                    session, publication=held, markdown=markdown, now=services.clock()
                )
            session.commit()
            title = incident.title
    except SQLAlchemyError:
        # The close is committed, and its publication pending: it is tried again.
        log.warning("could not write the postmortem of %s", reference, exc_info=True)
        tell(
            response_url,
            replies.refusal(
                f"{reference} is closed, but the database stopped answering before I could "
                "write its postmortem, so nothing was posted yet. I will try again; "
                f"`incident-bot export {reference}` prints the postmortem once it answers."
            ),
        )
        return Attempt.RETRY
    # Not inside the session: a slow response URL would hold its connection (and on SQLite
    # the write lock every command needs) for as long as Slack took.
    if failure is not None:
        tell(
            response_url,
            replies.refusal(
                f"{reference} is closed, but no postmortem was uploaded: the template "
                f"{failure}. Once it is fixed, `incident-bot export {reference}` prints the "
                "postmortem."
            ),
        )
    if channel_id is None:  # nowhere to post it (Incident.posts_in): kept, and done
        return Attempt.DONE
    posted_in = channel_id

    client = web_client(services.settings, token)

    def still_mine(*, summary_posted: bool = False) -> bool:
        """Renew the claim before a call to Slack; False when it is no longer ours."""
        try:
            with services.sessions() as session:
                held = incidents.hold_publication(
                    session, incident_id=incident_id, claim=claim, now=services.clock()
                )
                if held is not None and summary_posted:
                    held.summary_posted = True
                session.commit()
                return held is not None
        except SQLAlchemyError:  # the claim made before still holds for a while
            log.warning("could not renew the claim on %s", reference, exc_info=True)
            return True

    def post_summary() -> None:
        client.chat_postMessage(
            channel=posted_in,
            text=summary.text,
            blocks=[block.to_dict() for block in summary.blocks],
            unfurl_links=False,
        )

    if not summary_posted:
        if not still_mine():
            return Attempt.LOST
        try:
            _as_member(client, posted_in, post_summary)
            summary_posted = True
        except SlackApiError as error:
            code = str(error.response.get("error", ""))
            log.warning("posting the summary of %s failed: %s", reference, explained(error))
            if code == "missing_scope":
                # Installed before the manifest asked for the scope: the response URL needs
                # none. The upload may still go up, on a scope of its own.
                # Refused until the app is reinstalled: the upload decides what comes next.
                summary_posted = True
                tell(response_url, summary)
                tell(
                    response_url,
                    replies.refusal(
                        f"I could not post the summary of {reference} ({explained(error)})."
                    ),
                )
            elif code in NOT_A_MEMBER or code in CANNOT_POST or code in TOKEN_REFUSED:
                # The response URL can still speak in the channel for the person who closed
                # it. Told there, it is over; not told (no response URL), it is tried again:
                # someone may invite the bot, or reinstall it, meanwhile.
                shared = tell(response_url, summary)
                told = tell(response_url, replies.refusal(_not_posted(code, reference)))
                return Attempt.DONE if shared and told else Attempt.RETRY
            else:
                # Slack said it failed: a later attempt posts it again if it may succeed.
                summary_posted = not retryable(error)
                tell(
                    response_url,
                    replies.refusal(f"I could not post the summary of {reference} ({code})."),
                )
        except UNREACHABLE as error:
            log.warning("posting the summary of %s failed: %s", reference, error)
            # An answer cut short or timed out may follow a message posted: not posted again.
            summary_posted = not refused_connection(error)
            tell(
                response_url,
                replies.refusal(f"I could not reach Slack to post the summary of {reference}."),
            )

    if markdown is None:
        return Attempt.DONE
    content = markdown

    def upload() -> None:
        client.files_upload_v2(
            channel=posted_in,
            content=content,
            filename=f"{reference}-postmortem.md",
            title=replies.plain(f"Postmortem {reference}: {title}", 250),
        )

    if not still_mine(summary_posted=summary_posted):
        return Attempt.LOST
    try:
        _as_member(client, posted_in, upload)
    except UNREACHABLE as error:
        again = not isinstance(error, SlackApiError) or retryable(error)
        code = explained(error) if isinstance(error, SlackApiError) else str(error)
        log.warning("uploading the postmortem of %s failed: %s", reference, code)
        told = tell(
            response_url,
            replies.refusal(
                f"I could not upload the postmortem of {reference} ({code}). It is saved: "
                f"`incident-bot export {reference}` prints it."
                + (" I will try again." if again else "")
            ),
        )
        return Attempt.RETRY if again or not told else Attempt.DONE
    return Attempt.DONE


# Error codes with which Slack says that it failed this time (its Web API's common errors).
TRANSIENT = {
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "ratelimited",
}


def retryable(error: SlackApiError) -> bool:
    """Whether a later attempt could get past Slack's refusal: a 429, a 5xx, a transient code."""
    status = error.response.status_code
    return status == 429 or status >= 500 or error.response.get("error") in TRANSIENT


def refused_connection(error: BaseException) -> bool:
    """Whether Slack was never reached (nothing can have been posted)."""
    reason = error.reason if isinstance(error, URLError) else error
    return isinstance(reason, ConnectionRefusedError)


# How often each worker looks for pending postmortems that no one is publishing, and how
# many it takes on at most each time.
SWEEP_EVERY_S = 60.0
SWEEP_BATCH = 20


def start_sweeper(services: Services, *, every: float = SWEEP_EVERY_S) -> Periodic:
    """Publish pending postmortems (`publish_pending`) once now, then every `every` seconds,
    until the services stop: after a crash or a restart, what the closing worker did not
    publish is published by the next worker to start."""
    job = Periodic(
        services.followups,
        lambda: publish_pending(services),
        every=every,
        what="publishing the postmortems still pending",
    )
    services.periodic.append(job)
    return job.start()


def publish_pending(services: Services, *, limit: int = SWEEP_BATCH) -> int:
    """Publish up to `limit` pending postmortems that no one holds (the closing worker died,
    or the wait after a failed attempt is over), each under a claim of its own, so that
    another worker's sweep or a live follow-up does not post it twice; how many were tried.
    One that has had its attempts is given up, with an error in the log."""
    tried = 0
    for _ in range(limit):
        try:
            with services.sessions() as session:
                claimed = incidents.claim_publication(session, now=services.clock())
                if claimed is None:
                    return tried
                found, incident = claimed.publication, claimed.incident
                reference, team_id = incident.reference, incident.team_id
                # Where the close was typed; nowhere for a deleted private channel's.
                channel_id = incident.posts_in(found.channel_id)
                attempts, claim = found.attempts, found.claim
                enterprise_id, org_wide = found.enterprise_id, found.is_enterprise_install
                incident_id, given_up = found.incident_id, claimed.given_up
                session.commit()
        except SQLAlchemyError:
            log.warning("could not look for pending postmortems", exc_info=True)
            return tried
        token = workspace_token(
            services, team_id=team_id, enterprise_id=enterprise_id, is_enterprise_install=org_wide
        )
        if given_up:
            give_up(
                services,
                reference=reference,
                attempts=attempts,
                channel_id=channel_id,
                token=token,
            )
            continue
        assert claim is not None  # claim_publication gave it one
        tried += 1
        log.info(
            "publishing the postmortem of %s (attempt %d of %d)",
            reference,
            attempts,
            incidents.PUBLICATION_ATTEMPTS,
        )
        if token is None:
            log.warning("no bot token for workspace %s to publish %s with", team_id, reference)
            _finish(
                services,
                incident_id=incident_id,
                reference=reference,
                claim=claim,
                attempt=Attempt.RETRY,
                channel_id=channel_id,
                token=None,
            )
            continue
        publish_postmortem(
            services,
            incident_id=incident_id,
            reference=reference,
            channel_id=channel_id,
            token=token,
            response_url=None,
            claim=claim,
        )
    return tried


def workspace_token(
    services: Services, *, team_id: str, enterprise_id: str | None, is_enterprise_install: bool
) -> str | None:
    """The bot token that speaks in a workspace with no request at hand: SLACK_BOT_TOKEN, or
    with SLACK_CLIENT_ID the installation's (an org-wide one's for its workspaces); None
    when it is not installed (uninstalling forgets it) or the store cannot say."""
    settings = services.settings
    if not settings.multi_workspace:
        return settings.slack_bot_token
    store = SQLAlchemyInstallationStore(
        client_id=settings.slack_client_id or "", engine=services.engine, logger=log
    )
    try:
        # As Bolt's authorize asks it (an org-wide installation is found by its organization).
        bot = store.find_bot(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
    except SQLAlchemyError:
        log.warning("could not read the installation of %s", team_id, exc_info=True)
        return None
    return bot.bot_token if bot is not None else None


def explained(error: SlackApiError) -> str:
    """Slack's error code; for `missing_scope`, with the scope Slack says it needs."""
    code = str(error.response.get("error", ""))
    needed = error.response.get("needed")
    if code == "missing_scope" and isinstance(needed, str) and needed:
        return f"{code}: the app lacks {needed}; reinstall it to grant it"
    return code


def _not_posted(code: str, reference: str) -> str:
    """Why the summary is not in the channel, and what to do about it."""
    export = f"`incident-bot export {reference}` prints the postmortem"
    if code in CANNOT_POST:
        return f"I could not post in this channel: {CANNOT_POST[code]} ({code}). {export}."
    if code in TOKEN_REFUSED:
        return (
            f"Slack no longer accepts my token ({code}): the app was uninstalled or its token "
            f"revoked, so I can post nothing until someone reinstalls it. {export}."
        )
    return (
        f"I am not a member of this channel, so I could not post there ({code}). "
        f"Invite me with /invite; {export} meanwhile."
    )


def _as_member(client: WebClient, channel_id: str, call: Callable[[], None]) -> None:
    """Make the call; if the bot is not in the channel, join it (public channels) and retry once.

    When joining is refused (a private channel, a missing scope), the bot is still not a
    member: the first error is raised, and the caller asks to be invited. When it is refused
    because no one may post there (an archived channel, which the bot was taken out of),
    that refusal is raised: no invitation would help."""
    try:
        call()
    except SlackApiError as error:
        if error.response.get("error") != "not_in_channel":
            raise
        try:
            client.conversations_join(channel=channel_id)
        except SlackApiError as refused:
            why = refused.response.get("error")
            log.info("joining %s was refused: %s", channel_id, why)
            if why in CANNOT_POST:
                raise
            raise error from refused
        call()


def tell(response_url: str | None, reply: Reply, *, replace_original: bool | None = None) -> bool:
    """Answer through the command's response URL; whether Slack took it (a failure here is
    only logged)."""
    if not response_url:
        return False
    try:
        # Its log says only warnings, which do not name the URL (app.quiet_response_urls).
        client = WebhookClient(response_url, timeout=10, retry_handlers=retry_handlers())
        response = client.send(**reply.as_ack(), replace_original=replace_original)
    except Exception:
        log.exception("could not answer through the response URL")
        return False
    if response.status_code != 200:
        # Slack answers in the body: `expired_url`, `used_url` (five answers in 30 minutes).
        log.warning(
            "the response URL refused an answer: %s %s", response.status_code, response.body
        )
        return False
    return True
