"""The stand-in for Slack's Web API, where its own behaviour matters to the tests."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from bot.demo import FakeSlack, Fault


def test_a_client_that_hangs_up_before_the_answer_leaves_no_traceback(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # A lookup gives up after its second, and a test's process may end while the stand-in
    # still answers: a real server shrugs; a traceback after pytest's summary misleads.
    fake = FakeSlack().start()
    try:
        fake.fail("auth.test", Fault(delay=0.3))
        host, port = fake.base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as link:
            link.sendall(
                b"POST /api/auth.test HTTP/1.1\r\nHost: slack.test\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n"
            )
            # Closed with a reset, so the stand-in's answer meets a closed connection.
            link.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert fake.wait_for("auth.test", 1)
        time.sleep(1)  # the answer goes out 0.3 s after the call, to a closed connection
    finally:
        fake.stop()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
