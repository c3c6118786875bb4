"""The load generator keeps its connections alive, or opens one per request when asked.

A small HTTP/1.1 server on loopback counts the connections it accepts and the requests it
answers; the generator's own accounting is checked against it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import Group, Target, run_group


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.connections = 0
        self.requests = 0
        self.closing_asked = 0
        self.lock = threading.Lock()


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says Connection: close
    server: _Counting

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.requests += 1
            if self.headers.get("Connection", "").lower() == "close":
                self.server.closing_asked += 1
        body = b"Added to INC-1"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Counting]:
    counting = _Counting()
    thread = threading.Thread(target=counting.serve_forever, daemon=True)
    thread.start()
    try:
        yield counting
    finally:
        counting.shutdown()
        counting.server_close()


def _group(server: _Counting, *, new_connections: bool) -> Group:
    target = Target(
        host="127.0.0.1",
        port=server.server_address[1],
        secret="load-test-secret",
        team_id="T0LOAD0001",
        expect=b"Added to",
        new_connections=new_connections,
    )
    return Group(
        target=target,
        channels=("C0LOAD0001", "C0LOAD0002"),
        users=("U0LOAD0001", "U0LOAD0002"),
        count=20,
        rate=None,
        deadline_s=30.0,
        label="load-test",
    )


def test_keep_alive_uses_one_connection_per_client(server: _Counting) -> None:
    result = run_group(_group(server, new_connections=False))

    assert (result.ok, result.errors) == (20, 0), result.error_samples
    assert (server.requests, server.connections, server.closing_asked) == (20, 2, 0)


def test_new_connections_open_one_connection_per_request(server: _Counting) -> None:
    result = run_group(_group(server, new_connections=True))

    assert (result.ok, result.errors) == (20, 0), result.error_samples
    assert (server.requests, server.connections, server.closing_asked) == (20, 20, 20)
    assert result.reconnects == 0  # each was a fresh connection, not a retry
