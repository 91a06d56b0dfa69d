"""A raw HTTP/2 test client: the h2 library over a plain (or TLS) socket, frame-level control.

It can send what real clients never would (malformed headers, RST_STREAM floods) and shows what
the server sent (GOAWAY, RST_STREAM codes, trailers, flow-control windows).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


@dataclass
class Response:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code from the server

    @property
    def status(self) -> int:
        return int(dict(self.headers).get(b":status", b"0"))

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None


class RawH2Client:
    def __init__(self, host: str, port: int, *, validate: bool = True,
                 tls: ssl.SSLContext | None = None, settings: dict[int, int] | None = None,
                 split_preface: tuple[int, ...] = ()) -> None:
        sock = socket.create_connection((host, port), timeout=10)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        self.sock = sock
        self.authority = f"{host}:{port}".encode()
        self.scheme = b"https" if tls is not None else b"http"
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None,
            validate_outbound_headers=validate, normalize_outbound_headers=validate,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.responses: dict[int, Response] = {}
        self.goaways: list[h2.events.ConnectionTerminated] = []
        self.server_settings: dict[int, int] = {}
        self.closed = False
        self._buffer = b""
        first = self.conn.data_to_send()
        for start, end in zip((0, *split_preface), (*split_preface, len(first)), strict=True):
            sock.sendall(first[start:end])  # the preface in pieces: separate reads
            time.sleep(0.05 if split_preface else 0)

    # -- sending ---------------------------------------------------------------------------
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def headers(self, path: str = "/", method: str = "GET") -> list[tuple[bytes, bytes]]:
        return [(b":method", method.encode()), (b":scheme", self.scheme),
                (b":authority", self.authority), (b":path", path.encode())]

    def request(self, path: str = "/", method: str = "GET", *, body: bytes | None = None,
                end: bool = True, headers: list[tuple[bytes, bytes]] | None = None) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.responses[sid] = Response()
        hdrs = headers if headers is not None else self.headers(path, method)
        self.conn.send_headers(sid, hdrs, end_stream=end and not body)
        if body:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool) -> int:
        """Send as much of *body* as flow control allows now; returns the bytes sent."""
        sent = 0
        while sent < len(body):
            size = min(len(body) - sent, self.conn.local_flow_control_window(sid),
                       self.conn.max_outbound_frame_size)
            if size <= 0:
                break
            last = end and sent + size == len(body)
            self.conn.send_data(sid, body[sent:sent + size], end_stream=last)
            sent += size
        self.flush()
        return sent

    def reset(self, sid: int) -> None:
        self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    # -- receiving -------------------------------------------------------------------------
    def read_once(self, timeout: float) -> bool:
        """Process one read; False when the server closed the connection."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return True
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        # Frame by frame, so the GOAWAY work-around below applies to the frames after it.
        self._buffer += data
        while len(self._buffer) >= 9:
            size = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < size:
                break
            frame, self._buffer = self._buffer[:size], self._buffer[size:]
            for event in self.conn.receive_data(frame):
                self._on_event(event)
        self.flush()
        return True

    def _on_event(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", 0)
        resp = self.responses.get(sid)
        if isinstance(event, h2.events.ResponseReceived) and resp is not None:
            resp.headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            if resp is not None:
                resp.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.TrailersReceived) and resp is not None:
            resp.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded) and resp is not None:
            resp.ended = True
        elif isinstance(event, h2.events.StreamReset) and resp is not None:
            resp.reset = int(event.error_code)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.server_settings.update(
                {int(k): v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaways.append(event)
            # h2 (as a client) stops after any GOAWAY, but RFC 9113 §6.8 lets streams up to
            # last_stream_id finish: keep reading them.
            self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("timed out waiting on the HTTP/2 connection")
            if not self.read_once(min(remaining, 0.2)) and not predicate():
                raise AssertionError("the server closed the connection")

    def wait_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError("the server did not close the connection")
            self.read_once(0.2)

    def get(self, path: str = "/", timeout: float = 10.0) -> Response:
        sid = self.request(path)
        self.wait(lambda: self.responses[sid].done, timeout)
        return self.responses[sid]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
