"""`/incident`: a table of subcommands that both dispatches and renders the help.

Each handler turns one parsed command into one use-case call and a `Reply`; the listener
acknowledges only after the session commits (a note: after the note writer's transaction that
holds it commits, see bot/notes.py), so what Slack shows as recorded is on disk.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from slack_bolt import Ack, App, BoltContext
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot import bidi, db, incidents, notes, timeline, timeparse
from bot.config import Settings
from bot.models import REQUEST_ID_LENGTH, DeletedChannel, Field, Incident, incident_reference
from bot.services import Services
from bot.slack import channels, lookups, publish, replies
from bot.slack import text as slack_text
from bot.slack.channel_names import names as channel_names
from bot.slack.middleware import COMMAND_DEADLINE_S, rollback_quietly, time_left, with_session
from bot.slack.people import SLACKBOT, Person
from bot.slack.people import names as people_names
from bot.slack.replies import Reply

log = logging.getLogger(__name__)
# One JSON line per command: workspace, subcommand, outcome, latency. Never a token or secret.
request_log = logging.getLogger("bot.requests")


@dataclass(frozen=True)
class Call:
    """One `/incident` command, parsed: who typed what, where, and when it arrived."""

    session: Session
    services: Services
    team_id: str
    channel_id: str
    user_id: str
    text: str
    now: datetime
    token: str | None
    response_url: str | None
    deadline: float  # time.monotonic() by which its database work must be done
    raw: str = ""  # the text as Slack sent it, markup and all (for mentions)
    channel_name: str = ""  # as Slack names it: "directmessage" in a DM, "mpdm-…" in a group DM
    # Slack's trigger_id, one per invocation: the same request delivered twice has the same.
    request_id: str | None = None
    # The organization of an org-wide installation (Enterprise Grid), whose token answers it.
    enterprise_id: str | None = None
    is_enterprise_install: bool = False

    def in_conversation(self) -> bool:
        """True in a direct or group message, where the bot can neither post nor upload."""
        return in_conversation(self.channel_id, self.channel_name)

    @cached_property
    def writer(self) -> Person:
        """What Slack says of the caller, asked once per command: a lookup Slack did not
        answer in time would otherwise be waited for again."""
        return self.services.people.person(
            team_id=self.team_id, user_id=self.user_id, token=self.token
        )

    def zone(self) -> ZoneInfo:
        """The caller's time zone (Slack's `users.info`), or the configured fallback."""
        return ZoneInfo(self.writer.zone or self.services.people.fallback)

    def read_in(self, when: datetime | None) -> replies.ReadIn | None:
        """The zone a typed time `when` was read in, for the reply; None when none was typed."""
        if when is None:
            return None
        return replies.ReadIn(zone=self.zone().key, known=self.writer.zone is not None)

    def time_only(self, subcommand: str) -> datetime:
        """The text read as nothing but a time (`detected 1:06 AM`), or now when it is empty."""
        if not self.text:
            return self.now
        # People type `<when> -` as the other commands take it (`detected 7:20 AM -`). Text
        # after it has nowhere to go: refused, not stored without it.
        head, separator, tail = timeparse.partition(self.text)
        if not separator or not timeparse.looks_like_time(head):
            return timeparse.parse_time(self.text, zone=self.zone(), now=self.now)
        if tail.strip():
            raise incidents.IncidentError(
                f"`/incident {subcommand}` takes only a time, so "
                f"{bidi.quoted(replies.shorten(tail.strip(), 100))} would be lost. Mark it with "
                f"`/incident {subcommand} {bidi.contained(head.strip())}` and add the text "
                f"with `/incident note {bidi.contained(head.strip())} - <text>`."
            )
        return timeparse.parse_time(head, zone=self.zone(), now=self.now)

    def leading_time(self) -> timeparse.Leading:
        """The text split into its optional `<when> - ` and the rest."""
        head, separator, _ = timeparse.partition(self.text)
        if not separator or not timeparse.looks_like_time(head):
            return timeparse.Leading(when=None, rest=self.text)
        return timeparse.split_leading_time(self.text, zone=self.zone(), now=self.now)


def in_conversation(channel_id: str, channel_name: str) -> bool:
    """Whether Slack's channel is a direct or group message, where no incident is run."""
    return (
        channel_id.startswith("D")
        or channel_name == "directmessage"
        or channel_name.startswith("mpdm-")
    )


@dataclass(frozen=True)
class Outcome:
    """A handler's result: the reply, and perhaps work to do once Slack has its answer.

    `result` says in one word what happened, for the request log: `ok`, `refused`, `help`,
    `no_incident`, `unknown_subcommand`, `missing_text`, `repeated` (the same request came
    before) or `db_error`.
    """

    reply: Reply
    followup: Callable[[], None] | None = None
    result: str = "ok"
    subcommand: str = ""
    doing: str = "follow-up work"  # what the followup does, for the log should it not finish


Handler = Callable[[Call, Incident | None], Outcome]


@dataclass(frozen=True)
class Subcommand:
    name: str
    usage: str
    description: str
    handler: Handler
    aliases: tuple[str, ...] = ()
    needs_text: bool = True
    needs_incident: bool = True
    # Its transaction records its request (trigger_id) first, so that the same request
    # delivered again changes nothing. Not for those that only read, nor for notes (their
    # entry keeps it: bot/notes.py).
    records_request: bool = True
    reads_only: bool = False  # a refusal then has nothing to say about what was recorded


def handle_start(call: Call, _: Incident | None) -> Outcome:
    if call.in_conversation():
        refusal = "Incidents are run in channels: start this one in a channel, where I can post."
        return Outcome(replies.refusal(refusal), result="refused")
    _refuse_only_a_time(call.text, "start", "title")
    zone = call.zone()
    leading = timeparse.split_leading_time(call.text, zone=zone, now=call.now)
    try:
        incident = incidents.start_incident(
            call.session,
            team_id=call.team_id,
            channel_id=call.channel_id,
            user_id=call.user_id,
            title=leading.rest,
            started_at=leading.when or call.now,
            timezone=zone.key,
            now=call.now,
        )
    except incidents.IncidentAlreadyOpenError as error:
        return Outcome(replies.already_open(error.incident), result="refused")
    followup = None
    if call.services.settings.incident_channels:
        services, incident_id, origin = call.services, incident.id, call.channel_id
        starter, token, response_url = call.user_id, call.token, call.response_url
        team_id = call.team_id

        def followup() -> None:
            channels.open_incident_channel(
                services,
                incident_id=incident_id,
                team_id=team_id,
                origin_channel=origin,
                starter=starter,
                token=token,
                response_url=response_url,
            )

    return Outcome(
        replies.started(incident, now=call.now),
        followup=followup,
        doing=f"opening a channel for {incident.reference}",
    )


def _refuse_only_a_time(text: str, subcommand: str, what: str) -> None:
    """Refuse text that is nothing but a time (`8:00 AM`): it would be stored as the text."""
    if _time_only(text):
        raise incidents.EmptyTextError(
            f"{bidi.quoted(text)} is only a time; the {what} goes after it: "
            f"`/incident {subcommand} {bidi.contained(text)} - <{what}>`."
        )


def handle_note(call: Call, _incident: Incident | None) -> Outcome:
    _refuse_only_a_time(call.text, "note", "text")
    leading = call.leading_time()
    occurred_at = leading.when or call.now
    if leading.when is not None:
        # The note writer finds the incident as it writes (bot/notes.py); its start, which
        # never changes, is read here. The read ends before the writer is waited for: on
        # SQLite, a transaction left open would hold up the writer's commit.
        try:
            incident = incidents.find_open_incident(
                call.session, team_id=call.team_id, channel_id=call.channel_id
            )
            if incident is not None:
                incidents.check_typed_time(incident, leading.when)
        finally:
            call.session.rollback()
    note = notes.NewNote(
        team_id=call.team_id,
        channel_id=call.channel_id,
        author_id=call.user_id,
        text=incidents.check_text(leading.rest),
        occurred_at=occurred_at,
        recorded_at=call.now,
        request_id=call.request_id,
    )
    added = call.services.notes.add(note, timeout=call.deadline - time.monotonic())
    if added is None:
        return no_incident(call)
    if added.repeated:
        return Outcome(replies.already_noted(added.reference, added.number), result="repeated")
    return Outcome(
        replies.noted(
            added.reference,
            added.timezone,
            occurred_at=occurred_at,
            text=note.text,
            now=call.now,
            number=added.number,
            unseparated=None if leading.when else timeparse.unseparated_time(note.text),
            read_in=call.read_in(leading.when),
        )
    )


def _field_handler(field: Field, label: str) -> Handler:
    def handle(call: Call, incident: Incident | None) -> Outcome:
        assert incident is not None
        replaced = getattr(incident, field.value) is not None
        change = incidents.set_field(
            call.session,
            incident=incident,
            field=field,
            value=call.text,
            user_id=call.user_id,
            now=call.now,
        )
        return Outcome(
            replies.field_set(incident, field_name=label, value=change.value, replaced=replaced)
        )

    handle.__name__ = f"handle_{field.value}"
    return handle


def handle_action(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    action = incidents.add_action(
        call.session, incident=incident, text=call.text, user_id=call.user_id, now=call.now
    )
    call.session.flush()
    count = len(incidents.actions(call.session, incident=incident))
    return Outcome(replies.action_added(incident, text=action.text, count=count))


_NO_TIME_SEPARATOR = re.compile(r"^-(?:\s+|$)")


def _without_empty_when(text: str) -> str:
    """`- text` → `text`: the optional `<when> -` of `close` and `edit`, typed with no time in
    it. That dash is not the text's: text that starts with one comes after a time
    (`close 2:46 AM - - x`), and `-5%` keeps its dash. `note` keeps it: a note may be a list
    item (`note - restarted db-2`), and its reply shows the text as stored."""
    return _NO_TIME_SEPARATOR.sub("", text, count=1)


def _time_only(text: str) -> bool:
    """A time with no separator after it. `1:10 AM -` already has one (Slack trimmed its
    last space), and a second would make the `-` the text."""
    return not timeparse.partition(text)[1] and timeparse.looks_like_time(text)


def handle_close(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    text = _without_empty_when(call.text)  # `close - fixed`
    if text and _time_only(text):  # `/incident close 2:46 AM` with no text after it
        text = text + timeparse.SEPARATOR
    leading = timeparse.split_leading_time(text, zone=call.zone(), now=call.now) if text else None
    when = leading.when if leading and leading.when else call.now
    incidents.close_incident(
        call.session,
        incident=incident,
        closed_at=when,
        user_id=call.user_id,
        text=leading.rest if leading else None,
        now=call.now,
        publish_to=incidents.PublishTo(
            channel_id=call.channel_id,
            enterprise_id=call.enterprise_id,
            is_enterprise_install=call.is_enterprise_install,
        ),
    )
    pending = incidents.publication(call.session, incident_id=incident.id)
    assert pending is not None and pending.claim is not None  # the close claimed it
    services, incident_id, token, claim = call.services, incident.id, call.token, pending.claim
    response_url, reference = call.response_url, incident.reference
    channel_id = incident.posts_in(call.channel_id)
    unposted = channel_id is None

    def followup() -> None:
        publish.publish_postmortem(
            services,
            incident_id=incident_id,
            reference=reference,
            channel_id=channel_id,
            token=token,
            response_url=response_url,
            claim=claim,
        )

    return Outcome(
        replies.closed_unposted(incident) if unposted else replies.closed(incident),
        followup=followup,
        doing=(
            f"publishing the postmortem of {reference} to {channel_id or 'no channel'} "
            f"(`incident-bot export {reference}` prints it)"
        ),
    )


def handle_status(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    entries = incidents.timeline(call.session, incident=incident, last=STATUS_ENTRIES)
    total = incidents.count_entries(call.session, incident=incident)
    roles = {
        role: holder.user_name
        for role, holder in incidents.current_roles(call.session, incident=incident).items()
    }
    return Outcome(
        replies.status(incident, entries=entries, total=total, now=call.now, roles=roles)
    )


def handle_timeline(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    entries = incidents.timeline(call.session, incident=incident)
    start = 0
    if call.text:
        number, rest = _entry_number(call.text)
        if rest:
            raise incidents.IncidentError(
                "`/incident timeline` takes at most the number of the entry to start from "
                "(e.g. `/incident timeline 120`)."
            )
        start = next((i for i, e in enumerate(entries) if e.number == number), -1)
        if start < 0:
            raise incidents.IncidentError(
                f"There is no entry `#{number}` on *{incident.reference}*'s timeline; "
                "`/incident timeline` lists them from the first."
            )
    return Outcome(replies.timeline_list(incident, entries=entries, now=call.now, start=start))


def _entry_number(text: str) -> tuple[int, str]:
    """`"#5 1:10 AM - text"` → `(5, "1:10 AM - text")`; any whitespace ends the number."""
    first, *more = text.split(maxsplit=1) or [""]
    rest = more[0] if more else ""
    digits = first.removeprefix("#")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:  # not "²"
        raise incidents.IncidentError(
            f"{bidi.quoted(replies.shorten(first, 20))} is not an entry number; "
            "`/incident timeline` lists them (e.g. `/incident edit 3 1:10 AM - new text`)."
        )
    return int(digits), rest.strip()


def handle_edit(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    number, rest = _entry_number(call.text)
    rest = _without_empty_when(rest)  # `edit 3 - new text`
    if rest and _time_only(rest):  # `edit 3 1:10 AM`: a new time only
        rest = rest + timeparse.SEPARATOR
    head, separator, _ = timeparse.partition(rest)
    if separator and timeparse.looks_like_time(head):
        leading = timeparse.split_leading_time(rest, zone=call.zone(), now=call.now)
    else:
        leading = timeparse.Leading(when=None, rest=rest)
    entry = timeline.edit_entry(
        call.session,
        incident=incident,
        number=number,
        text=leading.rest or None,
        occurred_at=leading.when,
        user_id=call.user_id,
        now=call.now,
    )
    read_in = call.read_in(leading.when)
    return Outcome(replies.entry_edited(incident, entry=entry, now=call.now, read_in=read_in))


def handle_delete(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    number, rest = _entry_number(call.text)
    if rest:
        raise incidents.IncidentError("`/incident delete` takes only an entry number.")
    entry, undone = timeline.delete_entry(
        call.session, incident=incident, number=number, user_id=call.user_id, now=call.now
    )
    followup = None
    if entry.source_channel and entry.source_ts:
        # A pinned message's check mark says it is on the timeline: it is not any more.
        services, token = call.services, call.token
        channel, ts = entry.source_channel, entry.source_ts

        def followup() -> None:
            publish.confirm_capture(services, token, channel, ts, add=False)

    return Outcome(
        replies.entry_deleted(incident, entry=entry, undone=undone),
        followup=followup,
        doing=f"taking the confirmation off {entry.source_channel}/{entry.source_ts}",
    )


def _moment_handler(moment: incidents.Moment) -> Handler:
    def handle(call: Call, incident: Incident | None) -> Outcome:
        assert incident is not None
        at = call.time_only(moment.value)
        earlier = incidents.mark_moment(
            call.session,
            incident=incident,
            moment=moment,
            at=at,
            user_id=call.user_id,
            now=call.now,
        )
        marked = replies.moment_marked(
            incident,
            moment=moment.value,
            at=at,
            now=call.now,
            read_in=call.read_in(at if call.text else None),
            earlier=earlier,
        )
        return Outcome(marked)

    handle.__name__ = f"handle_{moment.value}"
    return handle


def handle_severity(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    previous = incident.severity
    level = incidents.set_severity(
        call.session,
        incident=incident,
        severity=call.text,
        allowed=call.services.settings.severities,
        user_id=call.user_id,
        now=call.now,
    )
    return Outcome(replies.severity_set(incident, level=level, previous=previous, by=call.user_id))


# The mention, and perhaps the punctuation a sentence ends with (`@ann.`, `@ann!`).
_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|([^>]*))?>[.!,;:]*$")


# What else the list that opens at @ (or #) offers: a user group, everyone in the channel,
# a channel; and one person's mention, of which there may be several.
_NOT_A_PERSON = re.compile(r"<([#!])([^<>|]*)(\|[^<>]*)?>")
_PERSON = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^<>]*)?>")


def _not_one_person(mention: str, role: str) -> str:
    """Why `mention` (as Slack sent it) does not name one person, for the refusal: the
    person may well have picked what they typed from Slack's list."""
    usage = f"`/incident role {role} @ann`"
    for piece in _NOT_A_PERSON.finditer(mention):
        sigil, target, label = piece.groups()
        if sigil == "#":
            kind = "a channel"
        elif target.startswith("subteam^"):
            kind = "a user group"
        elif target in ("here", "channel", "everyone"):
            kind, label = "everyone in the channel", target
        else:  # a date, or markup Slack may add one day
            continue
        # Without its label Slack's markup holds only an id, which would mean nothing.
        named = bidi.quoted(slack_text.decode(piece.group())) if label else "That"
        return f"{named} is {kind}; give the {role} role to one person: {usage}."
    people = len(_PERSON.findall(mention))
    if people > 1:
        return f"Give the {role} role to one person at a time: {usage}."
    if people:
        return f"Give the {role} role with only the person's mention after it: {usage}."
    return f"Mention the person (type @ and pick them from the list), e.g. {usage}."


# What takes a role away instead of a person: `/incident role commander none`.
NOBODY = frozenset({"none", "nobody", "no one", "noone", "no-one", "clear"})


def _assign(call: Call, incident: Incident, role: str, mention: str) -> Outcome:
    if " ".join(slack_text.decode(mention).lower().split()).rstrip(".!") in NOBODY:
        holder = incidents.take_role_away(
            call.session, incident=incident, role=role, taken_by=call.user_id, now=call.now
        )
        return Outcome(
            replies.role_taken_away(incident, role=role, user_id=holder.user_id, by=call.user_id)
        )
    match = _MENTION.match(mention.strip())
    if match is None:
        raise incidents.IncidentError(_not_one_person(mention, role))
    user_id, label = match.group(1), (match.group(2) or "").strip()
    person = call.services.people.person(team_id=call.team_id, user_id=user_id, token=call.token)
    name = label or person.name or f"@{user_id}"
    shown = bidi.marked(name)  # its owner typed it: in a refusal, it cannot format ours
    if person.unknown:
        raise incidents.IncidentError(
            f"Slack does not know {shown} in this workspace; mention someone from the list "
            "that opens when you type @."
        )
    if person.is_bot or user_id == SLACKBOT:
        raise incidents.IncidentError(f"{shown} is an app; give the {role} role to a person.")
    if person.deactivated:
        raise incidents.IncidentError(f"{shown} is no longer in this workspace.")
    incidents.assign_role(
        call.session,
        incident=incident,
        role=role,
        user_id=user_id,
        user_name=name.removeprefix("@"),
        assigned_by=call.user_id,
        now=call.now,
    )
    return Outcome(replies.role_assigned(incident, role=role, user_id=user_id, by=call.user_id))


def handle_role(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    # From the text as Slack sent it, where the mention is still markup; the role as typed.
    # Any whitespace ends the role, as it ends the subcommand's name.
    raw_role, *more = call.raw.split(maxsplit=1) or [""]
    mention = more[0] if more else ""
    role = slack_text.decode(raw_role)
    roles = call.services.settings.roles
    if role.lower() not in roles:
        raise incidents.IncidentError(
            f"{bidi.quoted(replies.shorten(role, 30))} is not a role here; "
            f"use one of {', '.join(roles)}."
        )
    return _assign(call, incident, role.lower(), mention)


def handle_commander(call: Call, incident: Incident | None) -> Outcome:
    assert incident is not None
    return _assign(call, incident, "commander", call.raw)


def handle_reopen(call: Call, _incident: Incident | None) -> Outcome:
    if call.in_conversation():
        return no_incident(call)
    try:
        incident = incidents.reopen_incident(
            call.session,
            team_id=call.team_id,
            channel_id=call.channel_id,
            reason=call.text,
            user_id=call.user_id,
            now=call.now,
        )
    except incidents.NoOpenIncidentError:  # the channel never had one
        return Outcome(replies.nothing_to_reopen(), result="no_incident")
    return Outcome(replies.reopened(incident, reason=call.text, by=call.user_id))


def handle_list(call: Call, _incident: Incident | None) -> Outcome:
    found = incidents.open_incidents(call.session, team_id=call.team_id)
    return Outcome(replies.incident_list(found, now=call.now))


def handle_help(call: Call, _incident: Incident | None) -> Outcome:
    return Outcome(help_reply(call.services.settings), result="help")


STATUS_ENTRIES = 20
# What may come before the text and is not counted in its limit (check_text counts the text
# itself): an entry number `#123456789 ` and a `<when> - ` (a time is at most 64 characters).
PREFIX_ROOM = 80

SUBCOMMANDS: Sequence[Subcommand] = (
    Subcommand(
        "start",
        "start [<when> -] <title>",
        "Open an incident in this channel (INC-<n>); <when> is when it began.",
        handle_start,
        aliases=("open", "declare"),
        needs_incident=False,
    ),
    Subcommand(
        "note",
        "note [<when> -] <text>",
        "Add an entry to the timeline, stamped now or at <when>.",
        handle_note,
        aliases=("add", "log"),
        # Notes find their incident as they are written, in groups (bot/notes.py).
        needs_incident=False,
        records_request=False,
    ),
    Subcommand(
        "impact",
        "impact <text>",
        "Who or what was affected, e.g. `requests to checkout returned 503 errors`.",
        _field_handler(Field.IMPACT, "impact"),
    ),
    Subcommand(
        "cause",
        "cause <text>",
        "The root cause, e.g. `a DDoS attack that overloaded the servers' RAM`.",
        _field_handler(Field.CAUSE, "root cause"),
        aliases=("rootcause", "root-cause"),
    ),
    Subcommand(
        "resolution",
        "resolution <text>",
        "How it was resolved.",
        _field_handler(Field.RESOLUTION, "resolution"),
        aliases=("fix",),
    ),
    Subcommand(
        "summary",
        "summary <text>",
        "A closing summary for the postmortem.",
        _field_handler(Field.SUMMARY, "summary"),
    ),
    Subcommand(
        "action",
        "action <text>",
        "Add a corrective or preventative measure.",
        handle_action,
        aliases=("measure", "todo"),
    ),
    Subcommand(
        "close",
        "close [<when> -] [<text>]",
        "Close the incident (the text becomes the last entry) and post the postmortem. "
        "`close INC-<n> …` closes one whose channel was archived or deleted, from here.",
        handle_close,
        aliases=("end", "resolve"),
        needs_text=False,
    ),
    Subcommand(
        "status",
        "status",
        "Show the open incident and its latest timeline entries.",
        handle_status,
        needs_text=False,
        records_request=False,
        reads_only=True,
    ),
    Subcommand(
        "timeline",
        "timeline [<n>]",
        "List the timeline with entry numbers, for edit and delete; from entry <n> on.",
        handle_timeline,
        aliases=("entries",),
        needs_text=False,
        records_request=False,
        reads_only=True,
    ),
    Subcommand(
        "edit",
        "edit <n> [<when> -] [<text>]",
        "Change entry <n>'s time, text or both (the old ones are kept).",
        handle_edit,
    ),
    Subcommand(
        "delete",
        "delete <n>",
        "Take entry <n> off the timeline (the record of it is kept); a severity or role "
        "change goes with its entry.",
        handle_delete,
        aliases=("remove",),
    ),
    Subcommand(
        "detected",
        "detected [<when>]",
        "Mark when the impact was detected (now, or at <when>).",
        _moment_handler(incidents.Moment.DETECTED),
        needs_text=False,
    ),
    Subcommand(
        "mitigated",
        "mitigated [<when>]",
        "Mark when the impact was mitigated (now, or at <when>).",
        _moment_handler(incidents.Moment.MITIGATED),
        needs_text=False,
    ),
    Subcommand(
        "severity",
        "severity <level>",
        "Set the severity: {severities}.",
        handle_severity,
        aliases=("sev",),
    ),
    Subcommand(
        "role",
        "role <role> @person|none",
        "Give someone a role: {roles}; `none` takes it away.",
        handle_role,
    ),
    Subcommand(
        "commander",
        "commander @person|none",
        "Make someone the incident commander; `none` leaves nobody in the role.",
        handle_commander,
        aliases=("ic", "lead"),
    ),
    Subcommand(
        "reopen",
        "reopen <reason>",
        "Reopen this channel's last closed incident; the reason goes on the timeline.",
        handle_reopen,
        needs_incident=False,
    ),
    Subcommand(
        "list",
        "list",
        "The open incidents in this workspace.",
        handle_list,
        needs_text=False,
        needs_incident=False,
        records_request=False,
        reads_only=True,
    ),
    Subcommand(
        "help",
        "help",
        "Show this help.",
        handle_help,
        needs_text=False,
        needs_incident=False,
        records_request=False,
        reads_only=True,
    ),
)

_BY_NAME = {name: sub for sub in SUBCOMMANDS for name in (sub.name, *sub.aliases)}
# How alike (difflib's ratio) a typed name must be to a subcommand's to be suggested:
# `ntoe` → `note`, `stauts` → `status`, `comander` → `commander`, not `checkout` → anything.
SUGGESTION_CUTOFF = 0.6


def split_subcommand(text: str) -> tuple[str, str]:
    """`"note 1:06 AM - x"` → `("note", "1:06 AM - x")`; the name is lowercased.

    Any whitespace ends the name: a newline, a tab, or a no-break or ideographic space that
    a phone keyboard, an input method or a paste put there."""
    name, *rest = text.split(maxsplit=1) or [""]
    return name.lower(), rest[0].strip() if rest else ""


def find_subcommand(name: str) -> Subcommand | None:
    return _BY_NAME.get(name)


def help_reply(settings: Settings, problem: str | None = None) -> Reply:
    """Every subcommand's usage; the levels and roles are those this bot accepts
    (INCIDENT_SEVERITIES, INCIDENT_ROLES), which may not be the defaults."""
    accepted = {
        "severities": ", ".join(f"`{level}`" for level in settings.severities),
        "roles": ", ".join(f"`{role}`" for role in settings.roles),
    }
    rows = [(sub.usage, _described(sub).format_map(accepted)) for sub in SUBCOMMANDS]
    return replies.help_text(rows, problem=problem)


def _described(sub: Subcommand) -> str:
    """The subcommand's description, and the other names it answers to."""
    if not sub.aliases:
        return sub.description
    return f"{sub.description} Also {', '.join(f'`{alias}`' for alias in sub.aliases)}."


def run_command(call_text: str, build_call: Callable[[str], Call], settings: Settings) -> Outcome:
    """Dispatch one command's text; user errors come back as replies, nothing raised."""
    name, rest = split_subcommand(call_text)
    subcommand = find_subcommand(name)
    outcome = _run(subcommand, name, rest, build_call, settings)
    label = subcommand.name if subcommand else shorten_name(name) or "help"
    return replace(outcome, subcommand=label)


def _run(
    subcommand: Subcommand | None,
    name: str,
    rest: str,
    build_call: Callable[[str], Call],
    settings: Settings,
) -> Outcome:
    if not name:
        return Outcome(help_reply(settings), result="help")
    if subcommand is None:
        # The name as typed: help_text escapes it again for Slack.
        typed = shorten_name(slack_text.decode(name))
        # Shown as code, unless it holds a backtick: nothing escapes one inside `…`.
        named = bidi.quoted(typed) if "`" in typed else f"`{bidi.contained(typed)}`"
        problem = f"I don't know {named}. Here is what I can do:"
        meant = difflib.get_close_matches(name, _BY_NAME, n=1, cutoff=SUGGESTION_CUTOFF)
        if meant:  # a typo under stress: `ntoe`, `stauts`; nothing is run on a guess
            problem = (
                f"I don't know {named}. Did you mean `/incident {meant[0]}`? "
                "Nothing was recorded. Here is what I can do:"
            )
        return Outcome(help_reply(settings, problem), result="unknown_subcommand")
    if subcommand.needs_text and not rest:
        problem = f"`/incident {subcommand.name}` needs some text: {subcommand.usage}"
        return Outcome(help_reply(settings, problem), result="missing_text")
    call = build_call(rest)
    names = _look_up(subcommand, call, rest)
    call = replace(call, text=slack_text.decode(rest, names=names), raw=rest)
    if len(call.text) > incidents.MAX_TEXT_LENGTH + PREFIX_ROOM:
        refusal = replies.refusal(str(incidents.TextTooLongError(len(call.text))))
        return Outcome(refusal, result="refused")
    channel_id = call.channel_id  # where the incident the command is about is open
    if subcommand.name == "close":
        number, rest = named_incident(call.text)
        if number is not None:
            where = _closing_by_name(call, number)
            if isinstance(where, Outcome):
                return where
            channel_id, call = where, replace(call, text=rest)
    if subcommand.records_request and call.request_id is not None:
        try:
            incidents.record_request(
                call.session,
                request_id=call.request_id,
                team_id=call.team_id,
                command=subcommand.name,
                now=call.now,
            )
        except incidents.RepeatedRequestError as error:
            return Outcome(replies.refusal(str(error)), result="repeated")
    incident = None
    if subcommand.needs_incident:
        # Locked until the command commits (PostgreSQL): a close waits for it, and one that
        # waited for a close finds the incident closed, so what is answered as set is in the
        # postmortem that close publishes.
        incident = incidents.find_open_incident(
            call.session, team_id=call.team_id, channel_id=channel_id, for_update=True
        )
        if incident is None and channel_id != call.channel_id:  # closed by name meanwhile
            call.session.rollback()
            return Outcome(replies.refusal("It was closed meanwhile."), result="refused")
        if incident is None:
            return no_incident(call)
    try:
        return subcommand.handler(call, incident)
    except (incidents.IncidentError, timeparse.TimeParseError) as error:
        call.session.rollback()
        message = error.message
        # Said of every refused change: under stress, one refusal that does not say it
        # leaves the person unsure whether the change went in anyway.
        if not subcommand.reads_only and "nothing was" not in message.lower():
            message = f"{message} {NOTHING_RECORDED}"
        return Outcome(replies.refusal(message), result="refused")


NOTHING_RECORDED = "Nothing was recorded."


# `close INC-12 …`: the incident named, as its own channel was archived and takes no commands.
_REFERENCE = re.compile(r"inc-([0-9]{1,9})", re.IGNORECASE)


def named_incident(text: str) -> tuple[int | None, str]:
    """`"INC-12 2:46 AM - fixed"` → `(12, "2:46 AM - fixed")`; `(None, text)` when the text
    does not begin with an incident's name."""
    first, *more = text.split(maxsplit=1) or [""]
    found = _REFERENCE.fullmatch(first)
    if found is None:
        return None, text
    return int(found[1]), more[0].strip() if more else ""


def _closing_by_name(call: Call, number: int) -> str | Outcome:
    """The channel in which the incident `close INC-<n>` names is open, or the refusal: it
    must be this channel's, or one whose channel is archived (no one can type a command
    there) and public (its postmortem is then posted here, where the close was typed), or
    one whose channel Slack said it deleted (a private one's postmortem is posted nowhere)."""
    reference = incident_reference(number)
    incident = incidents.find_incident(call.session, team_id=call.team_id, number=number)
    channel_id, is_open = (incident.channel_id, incident.is_open) if incident else ("", False)
    deleted = incident.channel_deleted if incident else None
    # End the lookup's transaction before Slack is asked: on SQLite it holds the write lock.
    call.session.rollback()
    if incident is None:
        return _not_closed(f"There is no {reference}.")
    if not is_open:
        return _not_closed(f"{reference} is already closed.")
    if channel_id == call.channel_id:
        return channel_id
    if deleted == DeletedChannel.PRIVATE:  # closed, and posted nowhere: a DM will do
        return channel_id
    if call.in_conversation():
        return _not_closed(f"Close {reference} in a channel, where I can post its postmortem.")
    if deleted == DeletedChannel.PUBLIC:  # Slack knows it no more: nothing to ask
        return channel_id
    why_not = channels.why_not_closed_elsewhere(
        call.services, token=call.token, channel_id=channel_id, reference=reference
    )
    return channel_id if why_not is None else _not_closed(why_not)


def _not_closed(why: str) -> Outcome:
    """`why` is the bot's own mrkdwn (it may link a channel), holding nothing typed."""
    return Outcome(replies.simple(f":warning: {why} {NOTHING_RECORDED}"), result="refused")


# Subcommands that may read a time in the caller's zone, and those that name a person.
_READ_A_TIME = frozenset({"start", "close", "edit", "detected", "mitigated"})
_NAME_A_PERSON = frozenset({"commander", "role"})


def _look_up(subcommand: Subcommand, call: Call, rest: str) -> slack_text.Names:
    """Ask Slack, before the command's transaction begins, about the caller (for their zone),
    a person the command names, and the people and channels its text mentions without their
    names: Slack may take up to a second, and meanwhile the request's record (on SQLite, the
    process's write lock) and the incident's row lock would be held. The answers are cached,
    so the handler's own lookups then cost nothing. The names Slack gave in time."""
    writer: list[str] = []
    if subcommand.name == "start" or (
        subcommand.name in _READ_A_TIME and any(c.isdigit() for c in rest)
    ):
        writer = [call.user_id]
    named: list[str] = []
    if subcommand.name in _NAME_A_PERSON:
        named = re.findall(r"<@([UW][A-Z0-9]+)[|>]", rest)
    return names_in(
        call.services, team_id=call.team_id, token=call.token, text=rest, people=writer, also=named
    )


def names_in(
    services: Services,
    *,
    team_id: str,
    token: str | None,
    text: str,
    people: Sequence[str] = (),
    also: Sequence[str] = (),
) -> slack_text.Names:
    """Ask Slack about `people`, and about a few of `also` and of the people and channels
    `text` mentions without their names, all at once and in one wait (no more than the
    request can spare): the names Slack gave in time. With nothing to ask (the usual note),
    no thread and no lock."""
    unnamed = slack_text.unnamed(text)
    if not (people or also or unnamed.people or unnamed.channels):
        return slack_text.Names()
    directory = services.people
    asked_people = directory.ask(team_id=team_id, user_ids=people, token=token)
    mentioned = directory.ask(team_id=team_id, user_ids=[*also, *unnamed.people], token=token)
    asked_channels = services.channels.ask(
        team_id=team_id, channel_ids=unnamed.channels, token=token
    )
    by = lookups.until()
    found = {**asked_people.wait(by), **mentioned.wait(by)}
    return slack_text.Names(
        people=people_names(found), channels=channel_names(asked_channels.wait(by))
    )


# In a direct or group message: there is no incident here, and none can be started.
NOT_HERE = "Incidents are run in channels: use `/incident` in the incident's channel."


def no_incident(call: Call) -> Outcome:
    """The answer to a command that needs an open incident where there is none."""
    if call.in_conversation():
        return Outcome(replies.refusal(NOT_HERE), result="no_incident")
    latest = incidents.latest_incident(
        call.session, team_id=call.team_id, channel_id=call.channel_id
    )
    if latest is not None:
        return Outcome(replies.closed_elsewhere(latest.reference), result="no_incident")
    return Outcome(replies.no_open_incident(), result="no_incident")


def shorten_name(name: str) -> str:
    return replies.shorten(name, 40)


def request_id(payload: dict[str, Any], key: str = "trigger_id") -> str | None:
    """The request's id (a command's trigger_id, an event's event_id), if Slack sent one that
    fits where it is kept."""
    found = payload.get(key)
    if not isinstance(found, str) or not 0 < len(found) <= REQUEST_ID_LENGTH:
        return None
    return found


def handle_incident_command(
    ack: Ack, command: dict[str, Any], context: BoltContext, services: Services
) -> None:
    """The `/incident` listener: parse, run one use case, commit, then acknowledge."""
    started = time.perf_counter()
    # Counted from the command's arrival where that is known (Socket Mode), as Slack counts.
    left = time_left()
    budget = COMMAND_DEADLINE_S if left is None else min(left, COMMAND_DEADLINE_S)
    deadline = time.monotonic() + budget
    session: Session = context["db"]
    now = services.clock()

    def build_call(text: str) -> Call:
        return Call(
            session=session,
            services=services,
            team_id=command.get("team_id") or context.team_id or "",
            channel_id=command.get("channel_id", ""),
            user_id=command.get("user_id", ""),
            text=text,
            now=now,
            token=context.bot_token,
            response_url=command.get("response_url"),
            deadline=deadline,
            channel_name=command.get("channel_name", ""),
            request_id=request_id(command),
            enterprise_id=context.enterprise_id,
            is_enterprise_install=bool(context.is_enterprise_install),
        )

    committing = False
    try:
        if budget <= 0:  # it waited out its time before it was taken: Slack has given up
            subcommand = find_subcommand(split_subcommand(command.get("text", ""))[0])
            outcome = Outcome(
                replies.too_late(), result="late", subcommand=subcommand.name if subcommand else ""
            )
        else:
            with db.deadline(services.engine, budget):
                outcome = run_command(command.get("text", ""), build_call, services.settings)
                committing = True
                if session.in_transaction():  # a note is committed by the note writer instead
                    session.commit()
    except (SQLAlchemyError, notes.NoteWriteError) as error:
        log.warning("could not record a command: %s", type(error).__name__, exc_info=True)
        rollback_quietly(session)
        subcommand = find_subcommand(split_subcommand(command.get("text", ""))[0])
        # A commit that failed on its way back may have reached the database.
        maybe_stored = (committing and db.failed_commit_may_be_stored(services.engine)) or (
            isinstance(error, notes.NoteWriteError) and error.maybe_stored
        )
        outcome = Outcome(
            replies.could_not_confirm() if maybe_stored else replies.could_not_record(),
            result="db_error",
            subcommand=subcommand.name if subcommand else "",
        )
    ack(**outcome.reply.as_ack())
    if outcome.followup is not None:
        services.followups.submit(outcome.followup, what=outcome.doing)
    services.pruning.start(services)
    request_log.info(
        json.dumps(
            {
                "event": "command",
                "team": command.get("team_id"),
                "channel": command.get("channel_id"),
                "user": command.get("user_id"),
                "subcommand": outcome.subcommand,
                "outcome": outcome.result,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )
    )


def register(app: App, services: Services) -> None:
    @with_session(services.sessions)
    def handle_incident(ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
        handle_incident_command(ack, command, context, services)

    app.command("/incident")(handle_incident)
