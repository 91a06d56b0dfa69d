"""A raw-socket WebSocket client for tests that must send what no library would: unmasked
frames, reserved opcodes and RSV bits, oversized control frames, invalid UTF-8, bad close codes,
or a client that never answers pings.

Frames are built by hand (RFC 6455 §5.2); the server's frames are parsed by hand too, and the
parser insists they are unmasked. Every read has a deadline: a server that stays silent fails
the test with the bytes seen so far instead of hanging it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bool = True) -> bytes:
    """One client frame. ``rsv`` is the 3-bit RSV1..RSV3 field; ``mask=False`` breaks §5.1."""
    head = bytearray([(0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)])
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length <= 125:
        head.append(mask_bit | length)
    elif length <= 0xFFFF:
        head.append(mask_bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _xor(payload, key)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big")


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8")


@dataclass
class HandshakeResponse:
    status: int
    headers: dict[str, str]
    raw: bytes
    rest: bytes = b""


class ProtocolFailure(AssertionError):
    pass


@dataclass
class RawWebSocket:
    """A handshaken (or rejected) WebSocket over a blocking socket."""

    sock: socket.socket
    response: HandshakeResponse
    buffer: bytearray = field(default_factory=bytearray)
    eof: bool = False
    reset: bool = False  # the server's TCP stack sent RST (an abort, not a clean close)

    @classmethod
    def connect(cls, host: str, port: int, path: str = "/", *,
                headers: list[tuple[str, str]] | None = None,
                key: str | None = None, version: str | None = "13",
                timeout: float = 5.0) -> RawWebSocket:
        """Open a TCP connection and send the upgrade request; the response head is parsed
        (any status: check ``response.status``)."""
        key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
                 "Connection: Upgrade"]
        if key:
            lines.append(f"Sec-WebSocket-Key: {key}")
        if version is not None:
            lines.append(f"Sec-WebSocket-Version: {version}")
        lines += [f"{name}: {value}" for name, value in headers or []]
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        deadline = time.monotonic() + timeout
        data = bytearray()
        while b"\r\n\r\n" not in data:
            chunk = _recv(sock, deadline)
            if not chunk:
                sock.close()
                raise ProtocolFailure(f"connection closed during the handshake: {bytes(data)!r}")
            data += chunk
        head, _, rest = bytes(data).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        parsed: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        response = HandshakeResponse(status, parsed, head, rest)
        if status == 101:
            expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
            if parsed.get("sec-websocket-accept") != expected:
                sock.close()
                raise ProtocolFailure(f"bad Sec-WebSocket-Accept in {head!r}")
        ws = cls(sock, response, bytearray(rest))
        return ws

    # -- sending -------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw: object) -> None:
        self.sock.sendall(frame(opcode, payload, **kw))  # type: ignore[arg-type]

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send_frame(CLOSE, close_payload(code, reason))

    # -- receiving -----------------------------------------------------------------------------
    def recv_frame(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None when the server closed the TCP connection first."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            if self.eof:
                if self.buffer:
                    raise ProtocolFailure(f"EOF inside a frame: {bytes(self.buffer)!r}")
                return None
            try:
                chunk = _recv(self.sock, deadline)
            except ConnectionResetError:
                self.reset = True
                chunk = b""
            if not chunk:
                self.eof = True
            self.buffer += chunk

    def recv_until_close(self, timeout: float = 5.0) -> tuple[list[Frame], Frame | None]:
        """Every frame up to and including the server's close frame (None: TCP closed
        without one)."""
        deadline = time.monotonic() + timeout
        frames: list[Frame] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProtocolFailure(f"no close frame within {timeout}s; got {frames!r}")
            got = self.recv_frame(remaining)
            if got is None:
                return frames, None
            if got.opcode == CLOSE:
                return frames, got
            frames.append(got)

    def wait_eof(self, timeout: float = 5.0) -> bytes:
        """Read until the server closes the TCP connection; returns what arrived meanwhile."""
        deadline = time.monotonic() + timeout
        extra = bytearray(self.buffer)
        self.buffer.clear()
        while not self.eof:
            try:
                chunk = _recv(self.sock, deadline)
            except ConnectionResetError:
                self.reset = True
                chunk = b""
            if not chunk:
                self.eof = True
            extra += chunk
        return bytes(extra)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _parse(self) -> Frame | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        if b1 & 0x80:
            raise ProtocolFailure(f"server frame is masked: {bytes(buf[:16])!r}")
        length = b1 & 0x7F
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = struct.unpack("!H", buf[2:4])[0]
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = struct.unpack("!Q", buf[2:10])[0]
            offset = 10
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset:offset + length])
        del buf[:offset + length]
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0xF, payload)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed waiting for the server")
    sock.settimeout(remaining)
    return sock.recv(256 * 1024)
