"""Supervisor <-> child messages over real ``multiprocessing`` pipes (every message is pickled
on the way): the Supervisor's reader, the child's one command loop, and a vanished peer."""

from __future__ import annotations

import logging
import multiprocessing
import threading

import pytest

from devserve.lifecycle import RequestCompleted
from devserve.supervision.ipc import (
    Channel,
    ChildMessage,
    Drain,
    Failed,
    Force,
    Forward,
    LivereloadError,
    Ready,
    Shutdown,
    dispatch_commands,
    read_messages,
)


class RecordingControl:
    """A child's answers, recorded (the loop under test is ``dispatch_commands``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.gone = threading.Event()

    def drain(self, grace: float) -> None:
        self.calls.append(("drain", grace))

    def shutdown(self, grace: float) -> None:
        self.calls.append(("shutdown", grace))

    def force(self) -> None:
        self.calls.append(("force", None))

    def livereload_error(self, error: LivereloadError) -> None:
        self.calls.append(("livereload_error", error))

    def parent_gone(self) -> None:
        self.calls.append(("parent_gone", None))
        self.gone.set()


def test_child_messages_reach_the_supervisor_in_order_until_the_child_closes() -> None:
    parent, child = multiprocessing.Pipe()
    event = RequestCompleted(slot=1, generation=2, method="GET", path="/ü", status=200,
                             duration=0.01, client="127.0.0.1:1")
    sent: list[ChildMessage] = [
        Forward(event),
        Failed("lifespan startup failed: boom", 'Traceback\n  File "app.py", line 3',
               "app.py:3"),
        Ready(),
    ]
    received: list[ChildMessage] = []
    reader = threading.Thread(target=read_messages, args=(parent, received.append))
    reader.start()
    channel = Channel(child)
    for message in sent:
        assert channel.send(message)
    channel.close()
    reader.join(10)
    assert not reader.is_alive(), "the reader did not end when the child's pipe closed"
    assert received == sent
    assert received[0] is not sent[0]  # really went through the pipe


def test_the_command_loop_obeys_each_command_and_ends_when_the_supervisor_is_gone() -> None:
    parent, child = multiprocessing.Pipe()
    control = RecordingControl()
    loop = threading.Thread(target=dispatch_commands, args=(child, control))
    loop.start()
    channel = Channel(parent)
    error = LivereloadError("SyntaxError: invalid syntax", "app.py:7", "Traceback ...")
    for command in (Drain(2.5), error, Shutdown(1.0), Force()):
        assert channel.send(command)
    channel.close()
    assert control.gone.wait(10)
    loop.join(10)
    assert control.calls == [("drain", 2.5), ("livereload_error", error), ("shutdown", 1.0),
                             ("force", None), ("parent_gone", None)]


@pytest.mark.parametrize("unknown", [("grace", 1.0), "drain", 42])
def test_an_unknown_message_is_logged_and_skipped(unknown: object,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Tuples and strings (the old wire format) are not commands any more."""
    parent, child = multiprocessing.Pipe()
    control = RecordingControl()
    with caplog.at_level(logging.WARNING, logger="devserve.error"):
        parent.send(unknown)
        parent.send(Force())
        parent.close()
        dispatch_commands(child, control)
    assert control.calls == [("force", None), ("parent_gone", None)]
    assert [r.getMessage() for r in caplog.records] == [
        f"ignored an unknown command from the Supervisor: {unknown!r}"]


def test_the_reader_skips_what_is_not_a_child_message(caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    parent, child = multiprocessing.Pipe()
    child.send(("ready",))
    child.send(Ready())
    child.close()
    received: list[ChildMessage] = []
    with caplog.at_level(logging.WARNING, logger="devserve.error"):
        read_messages(parent, received.append)
    assert received == [Ready()]
    assert "unknown message" in caplog.text


def test_sending_to_a_vanished_peer_reports_false_and_never_raises() -> None:
    parent, child = multiprocessing.Pipe()
    child.close()
    channel = Channel(parent)
    assert channel.send(Force()) is False
    channel.close()
    assert channel.send(Shutdown(1.0)) is False  # our own end closed too


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Drain(1.0).grace = 2.0  # type: ignore[misc]
