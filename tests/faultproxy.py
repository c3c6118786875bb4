"""A TCP proxy on loopback that fails on command: the network between the bot and its database.

`refuse()` closes the listening socket and every open link (the server went away),
`reset()` answers every packet with a reset, `hang()` stops forwarding while keeping every
connection open (a partition), and `heal()` puts things back on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

BUFFER = 65536


class FaultProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._mode = "forward"
        self._flowing = threading.Event()
        self._flowing.set()
        self._lock = threading.Lock()
        self._links: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stopped = False

    # --- control ---------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._listen()
        return self

    def refuse(self) -> None:
        """The database went away: new connections are refused, open ones are closed."""
        with self._lock:
            self._mode = "refuse"
            listener, self._listener = self._listener, None
        if listener is not None:
            _close_listener(listener)
        self._close_links(reset=False)

    def reset(self) -> None:
        """Every open connection, and every new one, is reset."""
        with self._lock:
            self._mode = "reset"
        self._close_links(reset=True)

    def hang(self) -> None:
        """A partition: connections stay open (and new ones are accepted) but nothing passes."""
        with self._lock:
            self._mode = "hang"
        self._flowing.clear()

    def heal(self) -> None:
        with self._lock:
            self._mode = "forward"
            closed = self._listener is None
        self._flowing.set()
        if closed:
            self._listen()

    def stop(self) -> None:
        self._stopped = True
        self._flowing.set()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            _close_listener(listener)
        self._close_links(reset=False)

    # --- plumbing ----------------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                mode = self._mode
            if mode == "reset":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._links += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._stopped:
                self._flowing.wait()
                data = source.recv(BUFFER)
                if not data:
                    break
                self._flowing.wait()  # held here while partitioned
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def _close_links(self, *, reset: bool) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            if reset:
                _reset(link)
            else:
                with contextlib.suppress(OSError):
                    link.close()


def _reset(link: socket.socket) -> None:
    """Close with a TCP reset rather than an orderly close."""
    with contextlib.suppress(OSError):
        link.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        link.close()


def _close_listener(listener: socket.socket) -> None:
    # close() alone does not wake a thread blocked in accept(); shutdown() does.
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
