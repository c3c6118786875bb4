"""The channel an incident lives in: the optional dedicated one, `inc-<yyyymmdd>-<slug>`,
created after `start`, and what Slack says happens to channels."""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from slack_bolt import App, BoltContext
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session

from bot import incidents
from bot.models import Incident
from bot.services import Services, web_client
from bot.slack import replies
from bot.slack.middleware import team_of, with_session
from bot.slack.publish import UNREACHABLE, explained, tell

log = logging.getLogger(__name__)

# Slack's limit on a channel name.
MAX_NAME = 80
MAX_ATTEMPTS = 20


def channel_name(incident: Incident, attempt: int = 1) -> str:
    """`inc-20261120-checkout-is-down`, cut to Slack's 80 characters, `-2`, `-3` on collisions."""
    day = incident.started_at.astimezone(ZoneInfo(incident.timezone)).strftime("%Y%m%d")
    ascii_title = unicodedata.normalize("NFKD", incident.title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-") or f"inc{incident.number}"
    suffix = "" if attempt == 1 else f"-{attempt}"
    base = f"inc-{day}-"
    room = MAX_NAME - len(base) - len(suffix)
    return base + slug[:room].rstrip("-") + suffix


def open_incident_channel(
    services: Services,
    *,
    incident_id: int,
    team_id: str,
    origin_channel: str,
    starter: str,
    token: str | None,
    response_url: str | None,
) -> None:
    """Create the incident's channel, move the incident there, invite the starter, post there.

    The channel is created in workspace `team_id`: an org-wide (Enterprise Grid) install's
    token serves all the organization's workspaces and Slack refuses to create a channel
    with it unless told which one (a workspace's own token ignores it)."""
    with services.sessions() as session:
        incident = session.get_one(Incident, incident_id)
        names = [channel_name(incident, attempt) for attempt in range(1, MAX_ATTEMPTS + 1)]
    client = web_client(services.settings, token)
    created: str | None = None
    why = "every name was taken"
    for name in names:
        try:
            created = str(client.conversations_create(name=name, team_id=team_id)["channel"]["id"])
            break
        except SlackApiError as error:
            if error.response.get("error") == "name_taken":
                continue
            why = explained(error)
            log.warning("conversations.create %s failed: %s", name, why)
            break
        except UNREACHABLE as error:
            why = "Slack could not be reached"
            log.warning("conversations.create %s failed: %s", name, error)
            break
    if created is None:
        # Said with Slack's reason: `missing_scope` (installed before channels:manage was
        # asked for) or `restricted_action` (a workspace policy) each need someone to act.
        tell(
            response_url,
            replies.simple(
                f"I could not create a channel for the incident ({why}); it stays here."
            ),
        )
        return
    with services.sessions() as session:
        incident = session.get_one(Incident, incident_id)
        if not incident.is_open or incident.channel_id != origin_channel:
            return
        incident.channel_id = created
        session.commit()
        header = replies.started(incident, now=services.clock())
        reference = incident.reference
    # A starter the bot may not invite (a guest, a Slack Connect user) can still join; the
    # channel gets its header either way.
    try:
        client.conversations_invite(channel=created, users=starter)
    except UNREACHABLE as error:
        log.warning("inviting %s to the channel of %s failed: %s", starter, reference, error)
    try:
        client.chat_postMessage(
            channel=created,
            text=header.text,
            blocks=[b.to_dict() for b in header.blocks],
            unfurl_links=False,  # a link in the title is not the channel's first message
        )
    except UNREACHABLE as error:
        log.warning("posting in the channel of %s failed: %s", reference, error)
    tell(
        response_url,
        replace(replies.simple(f"{reference} continues in <#{created}>."), in_channel=True),
    )


def why_not_closed_elsewhere(
    services: Services, *, token: str | None, channel_id: str, reference: str
) -> str | None:
    """None when Slack says the incident's channel is archived and public, so that it may be
    closed from another channel; else why not (mrkdwn). No one can type a command in an
    archived channel, and a private one's timeline is not posted in another."""
    client = web_client(services.settings, token)
    try:
        channel = client.conversations_info(channel=channel_id).get("channel") or {}
    except SlackApiError as error:
        code = str(error.response.get("error", ""))
        log.warning("conversations.info %s failed: %s", channel_id, code)
        if code == "missing_scope":
            return (
                f"I may not ask Slack whether <#{channel_id}> is archived ({code}): the app "
                "needs reinstalling with the scopes manifest.yaml lists."
            )
        if code == "channel_not_found":
            return (
                f"I could not see <#{channel_id}>, where {reference} is open ({code}): it "
                "was deleted, or it is private and I am not in it."
            )
        return f"Slack did not say whether <#{channel_id}> is archived ({code}); try again."
    except UNREACHABLE as error:
        log.warning("conversations.info %s failed: %s", channel_id, error)
        return f"Slack did not say whether <#{channel_id}> is archived; try again."
    if not channel.get("is_archived"):
        return f"{reference} is open in <#{channel_id}>: close it there (`/incident close`)."
    if channel.get("is_private"):
        return (
            f"{reference}'s channel <#{channel_id}> is private, so its postmortem is not "
            "posted in another channel: unarchive it and close it there."
        )
    return None


def register(app: App, services: Services) -> None:
    @with_session(services.sessions)
    def handle_channel_id_changed(
        event: dict[str, Any], body: dict[str, Any], context: BoltContext
    ) -> None:
        """Slack gives a private channel a new id for good when it is shared with Slack
        Connect, says so once, and names the channel by the new id from then on."""
        old, new = str(event.get("old_channel_id") or ""), str(event.get("new_channel_id") or "")
        if not old or not new or old == new:
            return
        session: Session = context["db"]
        team_id = team_of(context, body)
        moved = incidents.move_channel(
            session, team_id=team_id, old_channel_id=old, new_channel_id=new
        )
        session.commit()
        if moved:
            log.info("channel %s is now %s: %d incident(s) moved with it", old, new, moved)

    app.event("channel_id_changed")(handle_channel_id_changed)

    @with_session(services.sessions)
    def handle_channel_deleted(
        event: dict[str, Any], body: dict[str, Any], context: BoltContext
    ) -> None:
        """Slack deleted a channel (`channel_deleted`, public; `group_deleted`, private, sent
        only if the bot was in it). Slack then answers `channel_not_found` for it, as for a
        private channel the bot is not in, so only this event says that it is gone for good
        and whether it was private; its incidents note it (`close INC-<n>` from elsewhere)."""
        channel = str(event.get("channel") or "")
        if not channel:
            return
        session: Session = context["db"]
        marked = incidents.mark_channel_deleted(
            session,
            team_id=team_of(context, body),
            channel_id=channel,
            private=event.get("type") == "group_deleted",
        )
        session.commit()
        if marked:
            log.info("channel %s was deleted: %d incident(s) noted it", channel, marked)

    app.event("channel_deleted")(handle_channel_deleted)
    app.event("group_deleted")(handle_channel_deleted)
