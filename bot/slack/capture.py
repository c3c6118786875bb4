"""Pinning what was already said: a reaction, the message shortcut, and edits made in Slack.

A message joins the open incident's timeline stamped with its own `ts`, its author and a
permalink. Slack's retries and second pins find the entry already there (the database
holds one entry per message). Events from channels without an open incident are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from slack_bolt import Ack, App, BoltContext, BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot import db, incidents, timeline
from bot.incidents import IncidentError
from bot.models import Incident
from bot.services import Services
from bot.slack import replies
from bot.slack import text as slack_text
from bot.slack.commands import NOT_HERE, in_conversation, names_in, request_id
from bot.slack.middleware import COMMAND_DEADLINE_S, rollback_quietly, team_of, with_session
from bot.slack.publish import NOT_A_MEMBER, TOKEN_REFUSED, confirm_capture, explained, tell

log = logging.getLogger(__name__)

SHORTCUT_CALLBACK_ID = "add_to_timeline"
# Pages read to find one message: the range is that message alone (and a thread's parent).
MAX_PAGES = 5
# Refusals that Slack's retries of the event would meet again: the bot is no longer in the
# channel (or the channel is gone), its token is no longer accepted, or it was installed
# without a scope it needs to read there (groups:history, for a private channel).
CANNOT_READ = NOT_A_MEMBER | TOKEN_REFUSED | {"missing_scope"}


def slack_time(ts: str) -> datetime:
    """A Slack message `ts` ("1700000000.123456") as an aware UTC datetime."""
    return datetime.fromtimestamp(float(ts), UTC)


def fetch_message(client: WebClient, channel: str, ts: str) -> dict[str, Any] | None:
    """A message by channel and ts, whether it is in the channel or in a thread."""
    found = _find(
        client.conversations_history(
            channel=channel, latest=ts, oldest=ts, inclusive=True, limit=1
        ),
        ts,
    )
    if found is None:
        # A thread reply is not in the channel's history; ask for it by its own ts. A
        # thread's first page starts with its parent, whatever the range, and the parent
        # counts towards `limit`: room for two.
        try:
            replies = client.conversations_replies(
                channel=channel, ts=ts, latest=ts, oldest=ts, inclusive=True, limit=2
            )
        except SlackApiError as error:
            # Slack's answer for a `ts` that is no message (deleted since it was pinned):
            # there is nothing to read, now or when Slack sends the event again.
            if error.response.get("error") == "thread_not_found":
                return None
            raise
        found = _find(replies, ts)
    return found


def _find(pages: SlackResponse, ts: str) -> dict[str, Any] | None:
    """The message `ts` in a listing, read on through `next_cursor`: Slack may put fewer
    messages on a page than `limit` asks for, even when more follow. A few pages at most."""
    for page in islice(pages, MAX_PAGES):
        messages: list[dict[str, Any]] = page.get("messages") or []
        found = next((m for m in messages if m.get("ts") == ts), None)
        if found is not None:
            return found
    return None


def to_message(
    raw: dict[str, Any],
    *,
    channel: str,
    client: WebClient,
    names_in: Callable[[str, list[str]], slack_text.Names],
) -> timeline.Message:
    """What the timeline keeps of a Slack message: decoded text, author, link and files.
    `names_in(text, people)` gives the names Slack shows for `people` and for those `text`
    mentions without their names (`<@U123>`, `<#C123>`)."""
    ts = str(raw["ts"])
    author = str(raw.get("user") or raw.get("bot_id") or raw.get("username") or "")
    is_person = author.startswith(("U", "W"))
    text = message_text(raw)
    names = names_in(text, [author] if is_person else [])
    permalink: str | None = None
    try:
        permalink = client.chat_getPermalink(channel=channel, message_ts=ts).get("permalink")
    except (SlackClientError, OSError) as error:
        log.warning("chat.getPermalink failed for %s/%s: %s", channel, ts, error)
    files = [
        timeline.Attachment(
            name=str(f.get("name") or f.get("title") or "file"),
            permalink=f.get("permalink") if _is_web_link(f.get("permalink")) else None,
        )
        for f in raw.get("files") or []
        if isinstance(f, dict)
    ]
    return timeline.Message(
        channel_id=channel,
        ts=ts,
        author_id=author,
        author_name=names.people.get(author, f"@{author}") if is_person else _bot_name(raw),
        text=slack_text.decode(text, names=names),
        occurred_at=slack_time(ts),
        permalink=permalink if _is_web_link(permalink) else None,
        files=files,
        edited_ts=_edited_ts(raw),
    )


def _bot_name(raw: dict[str, Any]) -> str | None:
    """Who an integration posted as: the name its payload gave, or else its app's name."""
    profile = raw.get("bot_profile")
    name = raw.get("username") or (profile.get("name") if isinstance(profile, dict) else None)
    return str(name) if name else None


def _edited_ts(raw: dict[str, Any]) -> str | None:
    edited = raw.get("edited")
    ts = edited.get("ts") if isinstance(edited, dict) else None
    return str(ts) if ts else None


def message_text(raw: dict[str, Any]) -> str:
    """A message's text; for an alert posted by an integration with no text of its own
    (Datadog, Grafana...), the text of its attachments, or else of its blocks."""
    text = str(raw.get("text") or "").strip()
    if text:
        return text
    parts: list[str] = []
    for attachment in raw.get("attachments") or []:
        if not isinstance(attachment, dict):
            continue
        found = [
            str(attachment[key]).strip()
            for key in ("pretext", "title", "text")
            if attachment.get(key) and str(attachment[key]).strip()
        ]
        for field in attachment.get("fields") or []:
            if isinstance(field, dict) and (field.get("title") or field.get("value")):
                found.append(f"{field.get('title') or ''}: {field.get('value') or ''}".strip(": "))
        if not found and attachment.get("fallback"):
            found.append(str(attachment["fallback"]).strip())
        parts.extend(found)
    if not parts:
        parts = [text for block in raw.get("blocks") or [] for text in _block_texts(block)]
    return "\n".join(part for part in parts if part)


def _block_texts(block: object) -> list[str]:
    """The text a section, header or context block shows (the kinds alerts are made of)."""
    if not isinstance(block, dict):
        return []
    objects: list[object] = []
    if block.get("type") in ("section", "header"):
        objects = [block.get("text"), *(block.get("fields") or [])]
    elif block.get("type") == "context":
        objects = list(block.get("elements") or [])
    return [
        str(item["text"]).strip()
        for item in objects
        if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"].strip()
    ]


def _is_web_link(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def end_lookup(session: Session) -> None:
    """End the transaction that finding the incident began, before Slack is asked anything:
    on SQLite it holds the write lock (BEGIN IMMEDIATE), and every command and note of the
    process would wait for Slack's answer."""
    session.commit()


def register(app: App, services: Services) -> None:
    pin = services.settings.timeline_emoji

    def names(team_id: str, token: str | None) -> Callable[[str, list[str]], slack_text.Names]:
        return lambda text, people: names_in(
            services, team_id=team_id, token=token, text=text, people=people
        )

    def react(token: str | None, channel: str, ts: str, *, add: bool) -> Callable[[], None]:
        return lambda: confirm_capture(services, token, channel, ts, add=add)

    def pinned(
        event: dict[str, Any], context: BoltContext, team_id: str
    ) -> tuple[Incident, str, str] | None:
        """The open incident, channel and ts a pin reaction is about; None to ignore it."""
        item = event.get("item") or {}
        if event.get("reaction") != pin or item.get("type") != "message":
            return None
        channel, ts = str(item.get("channel")), str(item.get("ts"))
        incident = incidents.find_open_incident(context["db"], team_id=team_id, channel_id=channel)
        end_lookup(context["db"])
        return (incident, channel, ts) if incident is not None else None

    @with_session(services.sessions)
    def handle_reaction_added(
        event: dict[str, Any],
        body: dict[str, Any],
        context: BoltContext,
        client: WebClient,
        request: BoltRequest,
    ) -> None:
        team_id = team_of(context, body)
        found = pinned(event, context, team_id)
        if found is None:
            return
        incident, channel, ts = found
        session: Session = context["db"]
        # Slack sends a failed event again up to minutes later; the pin may be gone by then,
        # and its removal, handled meanwhile, found nothing to take off.
        if is_retry(request) and not _pinned_unless_unknown(client, channel, ts, pin):
            log.info("pin on %s/%s was removed before Slack's retry; ignoring it", channel, ts)
            return
        try:
            raw = fetch_message(client, channel, ts)
        except SlackApiError as error:
            code = str(error.response.get("error", ""))
            if code not in CANNOT_READ:
                raise  # a 5xx or a timeout: Slack sends the event again, which may succeed
            log.warning("pinned message %s/%s could not be read: %s", channel, ts, explained(error))
            return
        if raw is None:
            log.warning("pinned message %s/%s could not be read", channel, ts)
            return
        message = to_message(
            raw,
            channel=channel,
            client=client,
            names_in=names(team_id, context.bot_token),
        )
        event_id = request_id(body, "event_id")
        if event_id is not None:
            # Slack retries an event whose answer was slow though it was handled, and a proxy
            # may send one again: the entry may have been taken off since, and must stay off.
            try:
                incidents.record_request(
                    session,
                    request_id=event_id,
                    team_id=team_id,
                    command="reaction_added",
                    now=services.clock(),
                )
            except incidents.RepeatedRequestError:
                log.info("pin on %s/%s was handled before (%s); ignoring it", channel, ts, event_id)
                return
        try:
            _, created = timeline.capture_message(
                session,
                incident=incident,
                message=message,
                captured_by=str(event.get("user", "")),
                now=services.clock(),
                pinned_ts=_event_ts(event),
            )
        except IncidentError as error:
            session.rollback()
            log.info("not capturing %s/%s: %s", channel, ts, error)
            return
        session.commit()
        if created:
            services.followups.submit(
                react(context.bot_token, channel, ts, add=True),
                what=f"confirming the pin on {channel}/{ts}",
            )
        services.pruning.start(services)

    @with_session(services.sessions)
    def handle_reaction_removed(
        event: dict[str, Any], body: dict[str, Any], context: BoltContext, client: WebClient
    ) -> None:
        found = pinned(event, context, team_of(context, body))
        if found is None:
            return
        incident, channel, ts = found
        session: Session = context["db"]
        # Without Slack's word that no pin is left, someone else may still pin the message:
        # the entry stays. A 5xx, a rate limit or a timeout is raised and answered 500, and
        # Slack sends the event again, which may get that word.
        try:
            if _still_pinned(client, channel, ts, pin):
                return
        except SlackApiError as error:
            code = str(error.response.get("error", ""))
            if code in CANNOT_READ:  # Slack's retries would be refused the same way
                log.warning(
                    "could not tell whether %s/%s is still pinned: %s; keeping its entry",
                    channel,
                    ts,
                    explained(error),
                )
                return
            if code != "message_not_found":  # deleted since: no one pins it any more
                raise
        entry = timeline.uncapture_message(
            session,
            incident=incident,
            channel_id=channel,
            ts=ts,
            user_id=str(event.get("user", "")),
            now=services.clock(),
            unpinned_ts=_event_ts(event),
        )
        session.commit()
        if entry is not None:
            services.followups.submit(
                react(context.bot_token, channel, ts, add=False),
                what=f"taking the confirmation off {channel}/{ts}",
            )

    @with_session(services.sessions)
    def handle_message_changed(
        event: dict[str, Any], body: dict[str, Any], context: BoltContext, client: WebClient
    ) -> None:
        raw = event.get("message") or {}
        channel = str(event.get("channel", ""))
        # A deleted message that has replies stays as a tombstone ("This message was
        # deleted."), announced as a change; the timeline keeps what was said, as it does
        # for any other deleted message.
        if not raw.get("ts") or raw.get("subtype") == "tombstone":
            return
        session: Session = context["db"]
        team_id = team_of(context, body)
        incident = incidents.find_open_incident(session, team_id=team_id, channel_id=channel)
        if (
            incident is None
            or timeline.find_captured(
                session, incident=incident, channel_id=channel, ts=str(raw["ts"])
            )
            is None
        ):
            return
        end_lookup(session)
        message = to_message(
            raw,
            channel=channel,
            client=client,
            names_in=names(team_id, context.bot_token),
        )
        try:
            timeline.refresh_message(
                session, incident=incident, message=message, now=services.clock()
            )
        except IncidentError as error:
            session.rollback()
            log.info("not refreshing %s/%s: %s", channel, raw["ts"], error)
            return
        session.commit()

    def ignore_message(ack: Ack) -> None:
        """Everything else said in channels is none of our business."""
        ack()

    @with_session(services.sessions)
    def handle_timeline_shortcut(
        ack: Ack, body: dict[str, Any], context: BoltContext, client: WebClient
    ) -> None:
        session: Session = context["db"]
        response_url = body.get("response_url")

        def respond(reply: replies.Reply) -> None:
            """Answer the person after the shortcut is acknowledged: Slack wants that within
            3 seconds, and the response URL may be slow to take the reply."""
            services.followups.submit(
                lambda: tell(response_url, reply, replace_original=False),
                what="answering a shortcut",
            )

        team_id = team_of(context, body)
        channel = str((body.get("channel") or {}).get("id", ""))
        user = str((body.get("user") or {}).get("id", ""))
        raw = body.get("message") or {}
        committing = False
        try:
            # As for a command: a database that does not answer gets a clear answer in time.
            with db.deadline(services.engine, COMMAND_DEADLINE_S):
                incident = incidents.find_open_incident(
                    session, team_id=team_id, channel_id=channel
                )
                if incident is None:
                    ack()
                    where = body.get("channel") or {}
                    if in_conversation(channel, str(where.get("name", ""))):
                        respond(replies.refusal(NOT_HERE))  # a start is refused there too
                    else:
                        respond(replies.no_open_incident())
                    return
                end_lookup(session)
                message = to_message(
                    raw,
                    channel=channel,
                    client=client,
                    names_in=names(team_id, context.bot_token),
                )
                trigger_id = request_id(body)
                if trigger_id is not None:
                    # The same request again (a replay, a proxy's retry) must not bring back
                    # an entry taken off since the first.
                    incidents.record_request(
                        session,
                        request_id=trigger_id,
                        team_id=team_id,
                        command=SHORTCUT_CALLBACK_ID,
                        now=services.clock(),
                        what="“Add to incident timeline”",
                    )
                entry, created = timeline.capture_message(
                    session,
                    incident=incident,
                    message=message,
                    captured_by=user,
                    now=services.clock(),
                )
                reference, number = incident.reference, entry.number
                committing = True
                session.commit()
        except IncidentError as error:
            session.rollback()
            ack()
            respond(replies.refusal(error.message))
            return
        except SQLAlchemyError:
            log.warning("could not add a message to the timeline", exc_info=True)
            rollback_quietly(session)
            ack()
            maybe_stored = committing and db.failed_commit_may_be_stored(services.engine)
            trouble = replies.could_not_confirm() if maybe_stored else replies.could_not_record()
            respond(trouble)
            return
        ack()
        reply = replies.captured(reference=reference, number=number, created=created)
        respond(reply)
        services.pruning.start(services)
        if created:
            services.followups.submit(
                react(context.bot_token, channel, message.ts, add=True),
                what=f"confirming the pin on {channel}/{message.ts}",
            )

    app.event("reaction_added")(handle_reaction_added)
    app.event("reaction_removed")(handle_reaction_removed)
    app.event({"type": "message", "subtype": "message_changed"})(handle_message_changed)
    app.event("message")(ignore_message)
    app.shortcut(SHORTCUT_CALLBACK_ID)(handle_timeline_shortcut)


def is_retry(request: BoltRequest) -> bool:
    """Whether Slack is sending this event again (it says so in X-Slack-Retry-Num).

    Over HTTP the header comes only with a retry. Over Socket Mode every envelope says
    `retry_attempt`, 0 the first time, and Bolt hands it on as the header.
    """
    retry_num = (request.headers.get("x-slack-retry-num") or [""])[0].strip()
    return retry_num not in ("", "0")


def _event_ts(event: dict[str, Any]) -> str | None:
    """When Slack says the event's change happened (its `event_ts`)."""
    stamp = event.get("event_ts")
    return stamp if isinstance(stamp, str) and stamp else None


def _still_pinned(client: WebClient, channel: str, ts: str, pin: str) -> bool:
    """Whether a pin reaction is still on the message; raises when Slack does not say."""
    # Without `full`, Slack does not promise every reaction on the message.
    message = client.reactions_get(channel=channel, timestamp=ts, full=True).get("message") or {}
    return any(
        r.get("name") == pin and r.get("count", 0) > 0 for r in message.get("reactions") or []
    )


def _pinned_unless_unknown(client: WebClient, channel: str, ts: str, pin: str) -> bool:
    """Whether a pin reaction is still on the message, taking it as there when Slack does
    not say: recording a pin since removed loses nothing, ignoring one still there would."""
    try:
        return _still_pinned(client, channel, ts, pin)
    except (SlackClientError, OSError) as error:
        log.warning(
            "reactions.get failed for %s/%s: %s; taking the pin as there", channel, ts, error
        )
        return True
