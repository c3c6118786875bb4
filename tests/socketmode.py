"""Slack's Socket Mode end on loopback: a WebSocket server that hands envelopes to the app.

Just enough of RFC 6455 for slack_sdk's built-in client: the opening handshake, unfragmented
text frames each way, ping answered with pong, and close. FakeSlack's `apps.connections.open`
hands out `url`; the test then `deliver()`s envelopes as Slack would and reads the app's
acknowledgements, which carry the answer to a slash command as their payload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import uuid
from typing import Any

_ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _CLOSE, _PING, _PONG = 0x1, 0x8, 0x9, 0xA


class SocketModeServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Condition()
        self._link: socket.socket | None = None
        self._sending = threading.Lock()  # one frame at a time: pongs come from the reader
        self._acks: dict[str, dict[str, Any]] = {}
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"ws://{host}:{port}/link/?ticket=test"

    def stop(self) -> None:
        self._listener.close()
        with self._lock:
            if self._link is not None:
                self._link.close()

    def wait_connected(self, timeout: float = 30.0) -> None:
        with self._lock:
            assert self._lock.wait_for(lambda: self._link is not None, timeout), "no client came"

    def deliver(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        envelope_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """Send one envelope (`slash_commands`, `events_api`, `interactive`); its id.

        Slack delivers an envelope that was not acknowledged in time again, with the same
        id and `retry_attempt` counting up (0 the first time, with `retry_reason` empty).
        """
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self._send(_TEXT, json.dumps(envelope).encode())
        return envelope_id

    def disconnect(self, reason: str) -> None:
        """Tell the client its connection is to end (`warning`, `refresh_requested`), or
        that Socket Mode was turned off for the app (`link_disabled`), as Slack does."""
        message = {"type": "disconnect", "reason": reason, "debug_info": {"host": "test"}}
        self._send(_TEXT, json.dumps(message).encode())

    def ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The app's acknowledgement of an envelope; its `payload` is the answer, if any."""
        with self._lock:
            assert self._lock.wait_for(lambda: envelope_id in self._acks, timeout), "no ack"
            return self._acks[envelope_id]

    # --- the wire ------------------------------------------------------------------------

    def drop(self) -> None:
        """Close the client's connection, as Slack does now and then; it should come back."""
        with self._lock:
            link, self._link = self._link, None
        assert link is not None, "no client is connected"
        with self._sending:
            link.sendall(struct.pack("!BBH", 0x80 | _CLOSE, 2, 1001))  # 1001: going away
        link.close()

    def _accept(self) -> None:
        while True:
            try:
                link, _ = self._listener.accept()
            except OSError:  # stopped
                return
            threading.Thread(target=self._serve, args=(link,), daemon=True).start()

    def _serve(self, link: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += link.recv(4096)
        key = next(
            line.split(":", 1)[1].strip()
            for line in request.decode().split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1((key + _ACCEPT_GUID).encode()).digest()).decode()
        link.sendall(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        with self._lock:
            self._link = link
            self._lock.notify_all()
        self._send(_TEXT, json.dumps({"type": "hello", "num_connections": 1}).encode())
        self._read(link)

    def _read(self, link: socket.socket) -> None:
        stream = link.makefile("rb")
        try:
            while True:
                head = stream.read(2)
                if len(head) < 2:
                    return
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    (length,) = struct.unpack("!H", stream.read(2))
                elif length == 127:
                    (length,) = struct.unpack("!Q", stream.read(8))
                mask = stream.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(stream.read(length)))
                if opcode == _PING:  # answered on its own connection, even one dropped since
                    try:
                        self._send(_PONG, data, on=link)
                    except OSError:  # the client has closed it meanwhile
                        return
                elif opcode == _CLOSE:
                    return
                elif opcode == _TEXT:
                    message = json.loads(data)
                    with self._lock:
                        self._acks[message["envelope_id"]] = message
                        self._lock.notify_all()
        except (OSError, ValueError):
            return

    def _send(self, opcode: int, data: bytes, *, on: socket.socket | None = None) -> None:
        """Send a frame on `on`, or on the connection now current."""
        if len(data) < 126:
            head = struct.pack("!BB", 0x80 | opcode, len(data))
        elif len(data) < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, len(data))
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, len(data))
        link = on
        if link is None:
            with self._lock:
                link = self._link
        assert link is not None, "no client is connected"
        with self._sending:
            link.sendall(head + data)
