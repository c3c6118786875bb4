"""A local stand-in for Slack, and `incident-bot demo`, which runs a sample incident through it.

`FakeSlack` plays the part of Slack's Web API on 127.0.0.1 (the methods this bot calls,
files_upload_v2's upload URL and the commands' response URLs) and records every call.
`SlashCommand` builds a request signed exactly as Slack signs one. The tests use both.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

from slack_sdk.signature import SignatureVerifier

DEMO_TEAM = "T0DEMO0001"
DEMO_USER = "U0DEMO0001"
DEMO_SIGNING_SECRET = "demo-signing-secret"
DEMO_BOT_TOKEN = "xoxb-demo-token"
DEMO_ZONE = "Africa/Nairobi"
# Slackbot's user id, the same in every workspace.
SLACKBOT = "USLACKBOT"
# What `FakeSlack.fail` calls the commands' response URLs, which are not Web API methods.
RESPONSE_URL = "response_url"
# And the upload URL files.getUploadURLExternal hands out (files_upload_v2's second step).
UPLOAD_URL = "upload_url"

# Slack's documented limits on a message (Block Kit reference, chat.postMessage).
MESSAGE_BLOCKS = 50
SECTION_TEXT = 3000
HEADER_TEXT = 150
CONTEXT_ELEMENTS = 10
MESSAGE_TEXT = 40_000


def message_refusal(message: Mapping[str, Any]) -> str | None:
    """The error Slack answers `message` with (`invalid_blocks`, `msg_too_long`), or None
    when it is within Slack's documented limits: at most 50 blocks, a section's text at most
    3,000 characters, a header's 150, a context at most 10 elements of 3,000 characters each,
    and the text at most 40,000."""
    blocks = message.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if len(blocks) > MESSAGE_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        kind = block.get("type")
        text = (block.get("text") or {}).get("text", "")
        if kind == "section" and not 0 < len(text) <= SECTION_TEXT:
            return "invalid_blocks"
        if kind == "header" and not 0 < len(text) <= HEADER_TEXT:
            return "invalid_blocks"
        if kind == "context":
            elements = block.get("elements") or []
            if not 0 < len(elements) <= CONTEXT_ELEMENTS:
                return "invalid_blocks"
            if any(not 0 < len(e.get("text", "")) <= SECTION_TEXT for e in elements):
                return "invalid_blocks"
    if len(str(message.get("text") or "")) > MESSAGE_TEXT:
        return "msg_too_long"
    return None


@dataclass
class ApiCall:
    """One request the stand-in received."""

    method: str
    params: dict[str, Any]
    token: str | None


@dataclass
class Fault:
    """An answer to give instead of the normal one, `times` times."""

    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    delay: float = 0.0
    times: int = 1
    cut: bool = False  # a 200 whose body stops short of its Content-Length, then the link closes
    # More of the error's body, as Slack gives it: `needed` and `provided` with missing_scope.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeSlack:
    """Slack's Web API on loopback: answers like Slack, remembers what it was asked."""

    users: dict[str, str] = field(default_factory=dict)  # user id -> IANA zone
    bots: set[str] = field(default_factory=set)  # user ids that are apps' bot users
    deactivated: set[str] = field(default_factory=set)  # user ids Slack marks `deleted`
    names: dict[str, str] = field(default_factory=dict)  # user id -> display name
    team_id: str = DEMO_TEAM
    bot_user_id: str = "U0BOT00001"
    calls: list[ApiCall] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)
    # Messages refused as Slack refuses them (message_refusal): where, the message, the error.
    refused: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    members_only: set[str] = field(default_factory=set)  # channels the bot is not in
    private: set[str] = field(default_factory=set)  # private channels: joining is refused
    # Archived channels: nothing can be posted there and no one can join them. Archiving takes
    # the bot out of the channel, so archive one by putting it in `members_only` too.
    archived: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)  # channels deleted: Slack knows them no more
    tokens: dict[str, str] = field(default_factory=dict)  # bot token -> its workspace
    # Bot tokens Slack no longer accepts, and the error every method answers them with
    # (`token_revoked`, `account_inactive`, `invalid_auth`): the app uninstalled, the token revoked.
    revoked: dict[str, str] = field(default_factory=dict)
    # Messages people posted, by (channel, ts): what conversations.history/replies return.
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    channel_names: dict[str, str] = field(default_factory=dict)  # name -> id of existing channels
    # OAuth code -> the workspace it installs in, or an organization (an `E…` id) it installs
    # in org-wide (Enterprise Grid): the token is then the organization's, for all its workspaces.
    oauth_codes: dict[str, str] = field(default_factory=dict)
    socket_mode_url: str | None = None  # what apps.connections.open hands out

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None

    # --- running -----------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return f"{self.base}/api/"

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.base}/response/{name}"

    # --- inspecting and steering ---------------------------------------------------------

    def fail(self, method: str, fault: Fault) -> None:
        # A copy, counted down as it is given: the caller's may be given again (a test's
        # parameter, shared by the SQLite and PostgreSQL runs of the test).
        with self._lock:
            self.faults.setdefault(method, []).append(dataclasses.replace(fault))

    def calls_to(self, method: str) -> list[ApiCall]:
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10.0) -> list[ApiCall]:
        """The calls to `method` once there are `count` of them (or when `timeout` runs out)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [call for call in self.calls if call.method == method]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._lock.wait(remaining)

    def wait_for_responses(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.responses) < count and time.monotonic() < deadline:
                self._lock.wait(max(0.0, deadline - time.monotonic()))
            return list(self.responses)

    # --- answering -----------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length) if length else b""
        path = request.path.split("?", 1)[0]
        if path.startswith("/upload/"):
            fault = self._take_fault(UPLOAD_URL)
            if fault is not None and fault.status != 200:
                headers = (
                    {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                )
                _send(request, fault.status, (fault.error or "").encode(), "text/plain", headers)
                return
            with self._lock:
                self.uploads[path.removeprefix("/upload/")] = raw
                self._lock.notify_all()
            _send(request, 200, b"OK", "text/plain")
            return
        if path.startswith("/response/"):
            fault = self._take_fault(RESPONSE_URL)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.status != 200:
                # Slack answers a response URL in plain text: `expired_url`, `used_url`, ...
                headers = (
                    {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                )
                _send(request, fault.status, (fault.error or "").encode(), "text/plain", headers)
                return
            answer = json.loads(raw or b"{}")
            refused = message_refusal(answer)
            if refused is not None:  # Slack answers a message it will not show with a 400
                with self._lock:
                    self.refused.append((RESPONSE_URL, answer, refused))
                _send(request, 400, refused.encode(), "text/plain")
                return
            with self._lock:
                self.responses.append(answer)
                self._lock.notify_all()
            _send(request, 200, b"ok", "text/plain")
            return
        if not path.startswith("/api/"):
            _send(request, 404, b"Not Found", "text/plain")
            return
        method = path.removeprefix("/api/")
        params = _params(raw, request.headers.get("Content-Type", ""))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() or params.pop("token", None)
        with self._lock:
            self.calls.append(ApiCall(method=method, params=params, token=token))
            self._lock.notify_all()
            fault = self._take_fault(method)  # the lock is reentrant
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status != 200 or fault.error:
                headers = (
                    {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                )
                body = {"ok": False, "error": fault.error or "fatal_error", **fault.details}
                _send(request, fault.status, json.dumps(body).encode(), "application/json", headers)
                return
            if fault.cut:
                request.send_response(200)
                request.send_header("Content-Type", "application/json")
                request.send_header("Content-Length", "500")
                request.end_headers()
                request.wfile.write(b'{"ok": true, "chan')
                request.close_connection = True
                return
        if not token and method != "oauth.v2.access":
            _send(request, 200, b'{"ok": false, "error": "not_authed"}', "application/json")
            return
        with self._lock:
            refused = self.revoked.get(token or "")
            if refused is None and token and self.tokens and token not in self.tokens:
                refused = "invalid_auth"
        if refused is not None and method != "oauth.v2.access":
            refusal = json.dumps({"ok": False, "error": refused}).encode()
            _send(request, 200, refusal, "application/json")
            return
        answer = self._answer(method, params, token)
        _send(request, 200, json.dumps(answer).encode(), "application/json")

    def _take_fault(self, method: str) -> Fault | None:
        """The fault to answer this call to `method` with, if one is queued."""
        with self._lock:
            queue = self.faults.get(method) or []
            fault = queue[0] if queue else None
            if fault is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
            return fault

    def _answer(self, method: str, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        number = next(self._ids)
        if method == "auth.test":
            owner = self.tokens.get(token or "", self.team_id)
            return {
                "ok": True,
                "url": "https://demo.slack.com/",
                "team": "Demo",
                "team_id": owner,
                "user": "incident-bot",
                "user_id": self.bot_user_id,
                "bot_id": "B0BOT00001",
                **(
                    {"enterprise_id": owner, "is_enterprise_install": True}
                    if _is_organization(owner)
                    else {}
                ),
            }
        if method == "oauth.v2.access":
            team = self.oauth_codes.get(str(params.get("code", "")))
            if team is None:
                return {"ok": False, "error": "invalid_code"}
            minted = f"xoxb-{team}-{number}"
            with self._lock:
                self.tokens[minted] = team
            org_wide = _is_organization(team)
            return {
                "ok": True,
                "access_token": minted,
                "token_type": "bot",
                "scope": "commands,chat:write",
                "bot_user_id": self.bot_user_id,
                "app_id": "A0DEMO0001",
                "team": None if org_wide else {"id": team, "name": f"Workspace {team}"},
                "enterprise": {"id": team, "name": f"Org {team}"} if org_wide else None,
                "is_enterprise_install": org_wide,
                "authed_user": {"id": "U0INSTALL1"},
            }
        if method == "users.info":
            user = str(params.get("user", ""))
            if user == SLACKBOT:
                return {"ok": True, "user": _slackbot(self.team_id)}
            if user not in self.users:
                return {"ok": False, "error": "user_not_found"}
            zone = self.users[user]
            try:
                offset = datetime.now(ZoneInfo(zone)).utcoffset() or timedelta(0)
            except (ValueError, OSError, KeyError):  # a zone a test gives that is no zone
                offset = timedelta(0)
            return {
                "ok": True,
                "user": {
                    "id": user,
                    "team_id": self.team_id,
                    "name": user.lower(),
                    "is_bot": user in self.bots,
                    "deleted": user in self.deactivated,
                    "tz": zone,
                    "tz_label": zone,
                    "tz_offset": int(offset.total_seconds()),
                    "profile": {"display_name": self.names.get(user, ""), "real_name": ""},
                },
            }
        if method in ("chat.postMessage", "chat.postEphemeral"):
            channel = str(params.get("channel", ""))
            if channel in self.members_only:
                return {"ok": False, "error": "not_in_channel"}
            if channel in self.archived:
                return {"ok": False, "error": "is_archived"}
            refused = message_refusal(params)
            if refused is not None:
                with self._lock:
                    self.refused.append((method, dict(params), refused))
                return {"ok": False, "error": refused}
            ts = f"{int(time.time())}.{number:06d}"
            return {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"text": params.get("text"), "ts": ts},
            }
        if method == "conversations.join":
            channel = str(params.get("channel", ""))
            if channel.startswith("G") or channel in self.private:
                return {"ok": False, "error": "method_not_supported_for_channel_type"}
            if channel in self.archived:
                return {"ok": False, "error": "is_archived"}
            self.members_only.discard(channel)
            return {"ok": True, "channel": {"id": channel}}
        if method == "conversations.info":
            channel = str(params.get("channel", ""))
            is_private = channel.startswith("G") or channel in self.private
            if channel in self.deleted or (is_private and channel in self.members_only):
                return {"ok": False, "error": "channel_not_found"}
            if channel.startswith("D"):  # a direct message: a person, no name
                return {"ok": True, "channel": {"id": channel, "is_im": True, "user": "U0DM000001"}}
            named = {id_: name for name, id_ in self.channel_names.items()}
            return {
                "ok": True,
                "channel": {
                    "id": channel,
                    "name": named.get(channel, channel.lower()),
                    "is_channel": not is_private,
                    "is_group": is_private,
                    "is_private": is_private,
                    "is_archived": channel in self.archived,
                },
            }
        if method == "files.getUploadURLExternal":
            file_id = f"F{number:09d}"
            return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = params.get("files")
            listed = json.loads(files) if isinstance(files, str) else files or []
            channel = str(params.get("channel_id", ""))
            if channel in self.members_only:
                return {"ok": False, "error": "not_in_channel"}
            if channel in self.archived:
                return {"ok": False, "error": "is_archived"}
            return {
                "ok": True,
                "files": [{"id": f["id"], "title": f.get("title", "")} for f in listed],
            }
        if method == "conversations.history":
            return self._history(params, replies=False)
        if method == "conversations.replies":
            return self._history(params, replies=True)
        if method == "chat.getPermalink":
            channel, ts = str(params.get("channel", "")), str(params.get("message_ts", ""))
            with self._lock:
                message = self.messages.get((channel, ts))
            if message is None:
                return {"ok": False, "error": "message_not_found"}
            link = f"https://demo.slack.com/archives/{channel}/p{ts.replace('.', '')}"
            if message.get("thread_ts") and message["thread_ts"] != ts:
                link += f"?thread_ts={message['thread_ts']}&cid={channel}"
            return {"ok": True, "channel": channel, "permalink": link}
        if method in ("reactions.add", "reactions.remove"):
            channel, ts = str(params.get("channel", "")), str(params.get("timestamp", ""))
            if (channel, ts) not in self.messages:
                return {"ok": False, "error": "message_not_found"}
            self.react(
                channel,
                ts,
                str(params.get("name", "")),
                self.bot_user_id,
                add=method == "reactions.add",
            )
            return {"ok": True}
        if method == "reactions.get":
            channel, ts = str(params.get("channel", "")), str(params.get("timestamp", ""))
            with self._lock:
                message = self.messages.get((channel, ts))
                copied = json.loads(json.dumps(message)) if message else None
            if copied is None:
                return {"ok": False, "error": "message_not_found"}
            return {"ok": True, "type": "message", "channel": channel, "message": copied}
        if method == "conversations.create":
            with self._lock:
                owner = self.tokens.get(token or "", "")
            if _is_organization(owner) and not params.get("team_id"):
                # An org-wide token must say which of the organization's workspaces.
                return {"ok": False, "error": "missing_argument"}
            name = str(params.get("name", ""))
            if len(name) > 80:
                return {"ok": False, "error": "invalid_name_maxlength"}
            if not name or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789-_" for c in name):
                return {"ok": False, "error": "invalid_name_specials"}
            with self._lock:
                if name in self.channel_names:
                    return {"ok": False, "error": "name_taken"}
                channel_id = f"C{number:09d}"
                self.channel_names[name] = channel_id
            return {"ok": True, "channel": {"id": channel_id, "name": name}}
        if method == "conversations.invite":
            return {"ok": True, "channel": {"id": params.get("channel")}}
        if method == "apps.connections.open" and self.socket_mode_url:
            return {"ok": True, "url": self.socket_mode_url}
        return {"ok": False, "error": "unknown_method"}

    def post(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> str:
        """Put a message in a channel as if a person had posted it; returns its ts."""
        ts = ts or f"{time.time():.6f}"
        message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts}
        if thread_ts:
            message["thread_ts"] = thread_ts
        if files:
            message["files"] = files
        with self._lock:
            self.messages[(channel, ts)] = message
        return ts

    def edit(self, channel: str, ts: str, text: str) -> dict[str, Any]:
        """Change a message's text as Slack does when its author edits it; returns it."""
        with self._lock:
            message = self.messages[(channel, ts)]
            message["text"] = text
            message["edited"] = {"user": message["user"], "ts": f"{time.time():.6f}"}
            return dict(message)

    def react(self, channel: str, ts: str, name: str, user: str, *, add: bool = True) -> None:
        """Add (or take away) a person's reaction on a message."""
        with self._lock:
            reactions = self.messages[(channel, ts)].setdefault("reactions", [])
            found = next((r for r in reactions if r["name"] == name), None)
            if add:
                if found is None:
                    found = {"name": name, "users": [], "count": 0}
                    reactions.append(found)
                if user not in found["users"]:
                    found["users"].append(user)
            elif found is not None and user in found["users"]:
                found["users"].remove(user)
            if found is not None:
                found["count"] = len(found["users"])
                if not found["users"]:
                    reactions.remove(found)

    def _history(self, params: dict[str, Any], *, replies: bool) -> dict[str, Any]:
        channel = str(params.get("channel", ""))
        latest = float(params.get("latest") or "inf")
        oldest = float(params.get("oldest") or 0)
        inclusive = str(params.get("inclusive", "")).lower() in ("1", "true")
        thread = str(params.get("ts", ""))

        def wanted(message: dict[str, Any]) -> bool:
            ts = float(message["ts"])
            in_range = oldest <= ts <= latest if inclusive else oldest < ts < latest
            if replies:
                return in_range and (message["ts"] == thread or message.get("thread_ts") == thread)
            return in_range and message.get("thread_ts", message["ts"]) == message["ts"]

        with self._lock:
            found = [dict(m) for (c, _), m in self.messages.items() if c == channel and wanted(m)]
            known = (channel, thread) in self.messages
        if not replies and not found and channel in self.private:
            return {"ok": False, "error": "not_in_channel"}
        if replies and not known:  # no such message (any more): no thread to list
            return {"ok": False, "error": "thread_not_found"}
        found.sort(key=lambda m: float(m["ts"]), reverse=not replies)
        limit = int(params.get("limit") or 100)
        return {"ok": True, "messages": found[:limit], "has_more": len(found) > limit}

    def uploaded_text(self, index: int = -1) -> str:
        """The content of an uploaded file (the last one by default)."""
        with self._lock:
            return list(self.uploads.values())[index].decode()


def _slackbot(team_id: str) -> dict[str, Any]:
    """Slackbot as users.info describes it in every workspace: under the same id, and not
    `is_bot` ("Slackbot is special, so is_bot will be false for it", Slack's user object)."""
    return {
        "id": SLACKBOT,
        "team_id": team_id,
        "name": "slackbot",
        "real_name": "Slackbot",
        "deleted": False,
        "is_bot": False,
        "is_app_user": False,
        "tz": "America/Los_Angeles",
        "tz_label": "Pacific Standard Time",
        "tz_offset": -28800,
        "profile": {"real_name": "Slackbot", "display_name": "Slackbot"},
    }


def _is_organization(owner: str) -> bool:
    """Whether a token's owner is an Enterprise Grid organization (`E…`), not a workspace."""
    return owner.startswith("E")


def _params(raw: bytes, content_type: str) -> dict[str, Any]:
    if not raw:
        return {}
    if "json" in content_type:
        loaded = json.loads(raw)
        return dict(loaded) if isinstance(loaded, dict) else {}
    return dict(parse_qsl(raw.decode(), keep_blank_values=True))


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up before its answer (a lookup that stopped waiting after its
        # second, a process that ended) is no fault of the stand-in's: nothing to print.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _send(
    request: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)


# --- signed requests ----------------------------------------------------------------------


def slack_escape(typed: str) -> str:
    """Text as Slack sends what a person typed: `&`, `<` and `>` escaped."""
    return typed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def sign(secret: str, body: str, *, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request body, signed with the app's signing secret."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": signature or "",
    }


@dataclass
class SlashCommand:
    """Builds `/incident` requests as Slack sends them for one person in one channel."""

    secret: str
    team_id: str = DEMO_TEAM
    channel_id: str = "C0DEMO0001"
    user_id: str = DEMO_USER
    response_url: str = "https://hooks.slack.com/commands/T0/1/x"
    channel_name: str = "incident"  # "directmessage" in a DM, "mpdm-…" in a group DM
    # The organization of an org-wide (Enterprise Grid) install; `team_id` is then the
    # organization's workspace the command was typed in.
    enterprise_id: str | None = None

    def body(self, text: str, *, escaped: bool = False, with_trigger_id: bool = True) -> str:
        """The form body for `/incident <text>`; `text` is what the person typed.

        Each invocation gets a trigger_id of its own, as Slack gives it (the same body sent
        twice is a replay); `with_trigger_id=False` leaves it out, as older payloads do.
        """
        fields = {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "team_domain": "demo",
            "channel_id": self.channel_id,
            "channel_name": self.channel_name,
            "user_id": self.user_id,
            "user_name": "demo",
            "command": "/incident",
            "text": text if escaped else slack_escape(text),
            "api_app_id": "A0DEMO0001",
            "is_enterprise_install": "false" if self.enterprise_id is None else "true",
            "response_url": self.response_url,
        }
        if self.enterprise_id is not None:
            fields["enterprise_id"] = self.enterprise_id
        if with_trigger_id:
            fields["trigger_id"] = new_trigger_id()
        return urlencode(fields)

    def signed(
        self, text: str, *, escaped: bool = False, with_trigger_id: bool = True
    ) -> tuple[str, dict[str, str]]:
        body = self.body(text, escaped=escaped, with_trigger_id=with_trigger_id)
        return body, sign(self.secret, body)


def new_trigger_id() -> str:
    """A trigger_id shaped as Slack's (`13345224609.738474920.8088930838d88f008e0`), unique."""
    unique = uuid.uuid4()
    return f"{unique.int % 10**11}.{unique.int // 10**11 % 10**9}.{unique.hex[:21]}"


def signed_event(
    secret: str,
    event: dict[str, Any],
    *,
    team_id: str = DEMO_TEAM,
    event_id: str | None = None,
    retry_num: int | None = None,
    enterprise_id: str | None = None,
) -> tuple[str, dict[str, str]]:
    """An Events API callback as Slack posts it (JSON, signed; retries say so in headers).

    With `enterprise_id`, as an org-wide install receives it: the authorization names the
    organization and no workspace, the body still names the workspace.
    """
    authorization: dict[str, Any] = {"team_id": team_id, "user_id": "U0BOT00001", "is_bot": True}
    fields: dict[str, Any] = {}
    if enterprise_id is not None:
        authorization.update(team_id=None, enterprise_id=enterprise_id, is_enterprise_install=True)
        fields["enterprise_id"] = enterprise_id
    body = json.dumps(
        {
            "token": "legacy-verification-token",
            "team_id": team_id,
            **fields,
            "api_app_id": "A0DEMO0001",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [authorization],
        }
    )
    headers = sign(secret, body)
    headers["content-type"] = "application/json"
    if retry_num is not None:
        headers["x-slack-retry-num"] = str(retry_num)
        headers["x-slack-retry-reason"] = "http_timeout"
    return body, headers


def signed_shortcut(
    secret: str,
    *,
    callback_id: str,
    message: dict[str, Any],
    team_id: str = DEMO_TEAM,
    channel_id: str = "C0DEMO0001",
    user_id: str = DEMO_USER,
    response_url: str = "https://hooks.slack.com/app/T0/1/x",
) -> tuple[str, dict[str, str]]:
    """A message shortcut's interactivity payload as Slack posts it (form-encoded, signed),
    with a trigger_id of its own (the same body sent twice is a replay)."""
    payload = {
        "type": "message_action",
        "callback_id": callback_id,
        "trigger_id": new_trigger_id(),
        "action_ts": f"{time.time():.6f}",
        "team": {"id": team_id, "domain": "demo"},
        "channel": {"id": channel_id, "name": "incident"},
        "user": {"id": user_id, "name": "demo", "team_id": team_id},
        "message_ts": message["ts"],
        "message": message,
        "response_url": response_url,
    }
    body = urlencode({"payload": json.dumps(payload)})
    return body, sign(secret, body)


# --- the demo -----------------------------------------------------------------------------


def hum_replay(day: str) -> list[str]:
    """The incident of tests/reference-postmortems/hum-ddos-outage.md as `/incident` texts."""
    return [
        f"start {day} 1:06 AM - Servers answer every request with 503 errors",
        f"note {day} 1:06 AM - Outage begins",
        f"note {day} 1:06 AM - DataDog monitoring systems alerted developers",
        f"note {day} 1:10 AM - Alerted key stakeholders and security provider",
        f"note {day} 1:10 AM - Activated countermeasures",
        f"note {day} 1:37 AM - Monitored attack progression",
        f"note {day} 1:40 AM - Assessed defense performance",
        f"note {day} 1:51 AM - Successfully stopped the attack",
        f"note {day} 1:54 AM - Analyzed the attack",
        f"note {day} 2:11 AM - Assessed damages and Identified weak spots",
        f"note {day} 2:30 AM - Verification of security vendor SLA",
        f"note {day} 2:39 AM - Servers restart begin",
        "impact Requests to the company's servers resulted in 503 error response messages. "
        "All the services served by the servers returned a 503 status code. "
        "The outage affected 100% of traffic to the servers. The websites served were all down.",
        "cause a DDoS attack that overloaded the servers' RAM",
        "resolution The network team implemented IP-based Access Control Lists (ACLs) to block "
        "all the traffic from attack sources. The attack was coming from a single source. "
        "The servers were restarted once the attack was curbed.",
        "action Assess potential damages like loss of revenue and customers",
        "action Assign responsibilities according to the assessed damages",
        "action Set up detection mechanisms",
        "action Deploy a DDoS protection solution",
        "status",
        f"close {day} 2:46 AM - 100% traffic online",
    ]


def run() -> int:
    """Run the sample incident through the real app against the stand-in; print the postmortem."""
    from slack_bolt.request import BoltRequest

    from bot.app import build_app
    from bot.config import DEFAULT_DATABASE_URL, Settings
    from bot.services import build_services

    fake = FakeSlack(users={DEMO_USER: DEMO_ZONE}).start()
    services = None
    try:
        settings = dataclasses.replace(
            Settings.load(),
            # Always incidents.db here: DATABASE_URL (or .env) may name production's database,
            # which the demo must neither migrate nor write a sample incident into.
            database_url=DEFAULT_DATABASE_URL,
            slack_bot_token=DEMO_BOT_TOKEN,
            slack_signing_secret=DEMO_SIGNING_SECRET,
            slack_api_url=fake.api_url,
        )
        services = build_services(settings)
        app = build_app(settings, services)
        command = SlashCommand(
            secret=DEMO_SIGNING_SECRET,
            channel_id=f"C0DEMO{uuid.uuid4().hex[:6].upper()}",
            response_url=fake.response_url("demo"),
        )
        print(
            f"Running a sample incident in channel {command.channel_id} "
            f"(database: {settings.database_url})",
            file=sys.stderr,
        )
        day = (datetime.now(ZoneInfo(DEMO_ZONE)) - timedelta(days=1)).date().isoformat()
        for text in hum_replay(day):
            body, headers = command.signed(text)
            request_headers: dict[str, str | Sequence[str]] = dict(headers)
            response = app.dispatch(BoltRequest(body=body, headers=request_headers))
            reply = json.loads(response.body or "{}").get("text", "") if response.body else ""
            first_line = reply.splitlines()[0] if reply else ""
            print(
                f"  /incident {_shorten(text, 60):<62} {response.status} "
                f"{_shorten(first_line, 70)}",
                file=sys.stderr,
            )
            if response.status != 200:
                return 1
        if not services.followups.wait(timeout=60) or not fake.uploads:
            print("incident-bot demo: the postmortem was not uploaded", file=sys.stderr)
            return 1
        posted = fake.calls_to("chat.postMessage")
        if posted:
            print(f"Posted to the channel: {posted[-1].params.get('text')}", file=sys.stderr)
        print("Uploaded postmortem (files_upload_v2):\n", file=sys.stderr)
        sys.stdout.write(fake.uploaded_text())
        sys.stdout.flush()
        return 0
    finally:
        if services is not None:
            services.stop(0)  # incidents.db is left behind: all of it in the file
        fake.stop()


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
