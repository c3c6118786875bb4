"""The load generator: freshly signed `/incident` requests over keep-alive connections.

Or, with `Target.new_connections`, a new connection per request (`Connection: close`), as the
issue's own measurement of a bare Bolt app was made; its latency includes the connect.

Each client group is a process of its own running one event loop over its connections, so
neither the GIL nor thread switching of the generator limits what the server is asked to
do. A group reports its latencies and how much CPU it spent, which shows its headroom.

Two modes:
- closed loop (`rate=None`): every connection sends its next request as soon as the last
  one is answered, so `clients` requests are always in flight;
- open loop (`rate=r`): request k is due at `k / r` seconds; its latency counts from when it
  was due, so a slow answer that delays the next request is not hidden.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import queue
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.demo import SlashCommand

SLACK_PATH = "/slack/events"
CONNECT_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Target:
    """Where to send commands, how to sign them, and what every answer must contain."""

    host: str
    port: int
    secret: str
    team_id: str
    expect: bytes | None = None  # a substring of every acknowledgement; None: any 200
    new_connections: bool = False  # one connection per request instead of keep-alive


@dataclass(frozen=True)
class Group:
    """One generator process: its connections (a channel and a user each) and its share."""

    target: Target
    channels: tuple[str, ...]
    users: tuple[str, ...]
    count: int
    rate: float | None
    deadline_s: float
    label: str
    subcommand: str = "note"


@dataclass
class GroupResult:
    latencies_ms: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    reconnects: int = 0
    started: float = 0.0  # time.monotonic(), comparable across processes on Linux
    finished: float = 0.0
    cpu_s: float = 0.0
    timed_out: bool = False


@dataclass
class LoadResult:
    """What one configuration measured, all groups together."""

    clients: int
    count: int
    rate: float | None
    ok: int
    errors: int
    error_samples: list[str]
    reconnects: int
    wall_s: float
    throughput: float
    latencies_ms: list[float]
    client_cpu_s: float
    client_processes: int
    timed_out: bool
    probe_start: Any = None  # what `probe` returned just before the start and after the end
    probe_end: Any = None

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile (0 < p <= 100) of `values`; 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))
    return ordered[int(rank) - 1]


# --- one connection ----------------------------------------------------------------------


class _Response:
    """An HTTP/1.1 response parsed just enough: status, body, and whether the server closes."""

    __slots__ = ("status", "body", "close", "consumed")

    def __init__(self, status: int, body: bytes, close: bool, consumed: int) -> None:
        self.status = status
        self.body = body
        self.close = close
        self.consumed = consumed


def parse_response(buffer: bytes | bytearray) -> _Response | None:
    """The first complete response in `buffer`, or None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).lower().split(b"\r\n")
    status = int(head[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, head[0].startswith(b"http/1.0")
    for line in head[1:]:
        name, _, value = line.partition(b":")
        value = value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close"
    start = end + 4
    if not chunked:
        if len(buffer) - start < length:
            return None
        return _Response(status, bytes(buffer[start : start + length]), close, start + length)
    body = bytearray()
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
        chunk_start = line_end + 2
        if size == 0:
            if buffer[chunk_start : chunk_start + 2] != b"\r\n":
                return None  # trailers are never sent to us; wait for the final CRLF
            return _Response(status, bytes(body), close, chunk_start + 2)
        if len(buffer) < chunk_start + size + 2:
            return None
        body += buffer[chunk_start : chunk_start + size]
        position = chunk_start + size + 2


class _Connection:
    def __init__(self, target: Target, channel: str, user: str) -> None:
        self.target = target
        self.command = SlashCommand(
            secret=target.secret, team_id=target.team_id, channel_id=channel, user_id=user
        )
        self.sock: socket.socket | None = None
        self.buffer = bytearray()
        self.request = b""
        self.due = 0.0  # perf_counter() from when this request's latency counts
        self.in_flight = False
        self.resent = False

    def connect(self, selector: selectors.BaseSelector) -> None:
        sock = socket.create_connection(
            (self.target.host, self.target.port), timeout=CONNECT_TIMEOUT_S
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        selector.register(sock, selectors.EVENT_READ, self)

    def close(self, selector: selectors.BaseSelector) -> None:
        if self.sock is not None:
            selector.unregister(self.sock)
            self.sock.close()
            self.sock = None
        self.buffer.clear()

    def send(self, selector: selectors.BaseSelector, text: str, due: float) -> None:
        """Sign `text` now (Bolt refuses stale timestamps) and send it."""
        body, headers = self.command.signed(text)
        lines = [
            f"POST {SLACK_PATH} HTTP/1.1",
            f"Host: {self.target.host}:{self.target.port}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        if self.target.new_connections:
            lines.append("Connection: close")
        self.request = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        self.due = due
        self.resent = False
        self.in_flight = True
        self._write(selector)

    def resend(self, selector: selectors.BaseSelector) -> None:
        """The server closed an idle keep-alive connection before reading: send again."""
        self.close(selector)
        self.resent = True
        self._write(selector)

    def _write(self, selector: selectors.BaseSelector) -> None:
        if self.sock is None:
            self.connect(selector)
        assert self.sock is not None
        self.sock.sendall(self.request)


# --- one process ---------------------------------------------------------------------------


def run_group(group: Group) -> GroupResult:
    """Send `group.count` requests over its connections; bounded by `group.deadline_s`."""
    selector = selectors.DefaultSelector()
    connections = [
        _Connection(group.target, channel, user)
        for channel, user in zip(group.channels, group.users, strict=True)
    ]
    result = GroupResult()
    free = collections.deque(connections)  # first in, first out: every connection stays warm
    busy = 0
    issued = 0
    expect = group.target.expect
    cpu_start = time.process_time()
    result.started = time.monotonic()
    first_due = time.perf_counter()
    deadline = first_due + group.deadline_s

    def due_of(index: int) -> float:
        return first_due if group.rate is None else first_due + index / group.rate

    def fail(connection: _Connection, reason: str) -> None:
        connection.in_flight = False
        result.errors += 1
        if len(result.error_samples) < 5:
            result.error_samples.append(reason)
        connection.close(selector)

    try:
        while issued < group.count or busy:
            now = time.perf_counter()
            if now > deadline:
                result.timed_out = True
                result.errors += busy + group.count - issued
                break
            while free and issued < group.count and due_of(issued) <= now:
                connection = free.popleft()
                due = now if group.rate is None else due_of(issued)
                text = f"{group.subcommand} {group.label} {connection.command.user_id} #{issued}"
                try:
                    connection.send(selector, text, due)
                    busy += 1
                except OSError as error:
                    fail(connection, f"send: {error!r}")
                    free.append(connection)
                issued += 1
            if group.rate is not None and free and issued < group.count:
                wait = min(0.05, max(0.0, due_of(issued) - time.perf_counter()))
            else:
                wait = 0.05
            for key, _events in selector.select(wait):
                connection = key.data
                reset: OSError | None = None
                try:
                    data = connection.sock.recv(65536)
                except OSError as error:
                    data, reset = b"", error
                if not connection.in_flight:
                    # The server closed a keep-alive connection that had nothing to answer;
                    # the next request on it connects again.
                    connection.close(selector)
                    continue
                if not data:
                    if not connection.buffer and not connection.resent:
                        result.reconnects += 1
                        try:
                            connection.resend(selector)
                            continue
                        except OSError as error:
                            reset = error
                    fail(connection, f"closed: {reset!r}")
                    busy -= 1
                    free.append(connection)
                    continue
                connection.buffer += data
                response = parse_response(connection.buffer)
                if response is None:
                    continue
                elapsed_ms = (time.perf_counter() - connection.due) * 1000.0
                del connection.buffer[: response.consumed]
                connection.in_flight = False
                busy -= 1
                if response.status != 200 or (expect is not None and expect not in response.body):
                    fail(connection, f"{response.status}: {response.body[:200]!r}")
                else:
                    result.ok += 1
                    result.latencies_ms.append(elapsed_ms)
                    if response.close or connection.target.new_connections:
                        connection.close(selector)
                free.append(connection)
    finally:
        result.finished = time.monotonic()
        result.cpu_s = time.process_time() - cpu_start
        for connection in connections:
            connection.close(selector)
        selector.close()
    return result


def _child(group: Group, ready: Any, go: Any, results: Any) -> None:
    ready.put(os.getpid())
    if not go.wait(READY_TIMEOUT_S):
        results.put(GroupResult(errors=group.count, error_samples=["never told to start"]))
        return
    try:
        results.put(run_group(group))
    except Exception as error:  # report, so that the parent does not wait for nothing
        results.put(GroupResult(errors=group.count, error_samples=[f"crashed: {error!r}"]))


# --- several processes ---------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` near-equal shares, larger ones first."""
    share, rest = divmod(total, parts)
    return [share + (1 if i < rest else 0) for i in range(parts)]


def _wait_ready(children: list[Any], ready: Any) -> None:
    """Wait until every child has said it is ready; fail fast if one dies on the way."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = len(children)
    while waiting:
        try:
            ready.get(timeout=0.2)
            waiting -= 1
        except queue.Empty:
            dead = [child for child in children if child.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"load generator processes did not start: {dead}") from None


def drive(
    target: Target,
    *,
    channels: list[str],
    users: list[str],
    count: int,
    processes: int,
    rate: float | None = None,
    deadline_s: float = 120.0,
    label: str = "load",
    probe: Callable[[], Any] | None = None,
) -> LoadResult:
    """Run `count` requests from `len(channels)` clients spread over up to `processes` processes."""
    clients = len(channels)
    processes = max(1, min(processes, clients))
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    children = []
    offset = 0
    counts = split(count, processes)
    for index, size in enumerate(split(clients, processes)):
        group = Group(
            target=target,
            channels=tuple(channels[offset : offset + size]),
            users=tuple(users[offset : offset + size]),
            count=counts[index],
            rate=None if rate is None else rate * counts[index] / count,
            deadline_s=deadline_s,
            label=label,
        )
        offset += size
        child = context.Process(target=_child, args=(group, ready, go, results), daemon=True)
        child.start()
        children.append(child)
    try:
        _wait_ready(children, ready)
        probe_start = probe() if probe else None
        go.set()
        groups: list[GroupResult] = []
        for _ in children:
            try:
                groups.append(results.get(timeout=deadline_s + 30.0))
            except queue.Empty:
                groups.append(GroupResult(errors=1, error_samples=["no result"], timed_out=True))
        probe_end = probe() if probe else None
    finally:
        for child in children:
            child.join(timeout=10.0)
            if child.is_alive():
                child.kill()
                child.join(timeout=5.0)
    started = min(g.started for g in groups if g.started) if any(g.started for g in groups) else 0
    finished = max(g.finished for g in groups)
    wall = max(1e-9, finished - started)
    ok = sum(g.ok for g in groups)
    return LoadResult(
        clients=clients,
        count=count,
        rate=rate,
        ok=ok,
        errors=sum(g.errors for g in groups),
        error_samples=[s for g in groups for s in g.error_samples][:5],
        reconnects=sum(g.reconnects for g in groups),
        wall_s=wall,
        throughput=ok / wall,
        latencies_ms=[ms for g in groups for ms in g.latencies_ms],
        client_cpu_s=sum(g.cpu_s for g in groups),
        client_processes=len(children),
        timed_out=any(g.timed_out for g in groups),
        probe_start=probe_start,
        probe_end=probe_end,
    )
