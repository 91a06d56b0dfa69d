"""asyncio glue for HTTP/1.1: drives the sans-IO :class:`H1Connection` from a transport and
runs one :class:`HTTPCycle` at a time (pipelined requests wait in h11's buffer, in order).

Timers: an idle connection closes after ``--timeout-keep-alive``; once the first byte of a request
arrives its head must be complete within ``--timeout-request-header`` (slowloris guard, 408).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import h11

from devserve.asgi.cycle import Headers, HTTPCycle
from devserve.asgi.scope import apply_proxy_headers, http_scope
from devserve.protocols.http1 import (
    BadRequest,
    BodyChunk,
    ClientEOF,
    H1Connection,
    RequestEnd,
    RequestHead,
)
from devserve.serve.flow import WriteFlow
from devserve.serve.h2 import SWITCHING_H2C, h2c_upgrade
from devserve.serve.state import TCPConnection, WorkerState, detach_transport_socket
from devserve.serve.switch import take_over
from devserve.serve.ws import WSProtocol, is_websocket_upgrade, websocket_scope

logger = logging.getLogger("devserve.error")

DISCARD_BODY_LIMIT = 1024 * 1024  # unread request body we skip to keep a connection alive
DRAIN_IDLE_CLOSE = 0.5  # seconds an idle connection may still send one request while draining
HANDOFF_RETRY = 0.005  # seconds between hand-over attempts while a response is still written


class H1Protocol(TCPConnection):
    """One HTTP/1.1 connection."""

    def __init__(self, state: WorkerState, loop: asyncio.AbstractEventLoop, scheme: str = "http"
                 ) -> None:
        super().__init__(state, loop, scheme)
        config = state.config
        self.h1 = H1Connection(
            max_incomplete_event_size=config.h11_max_incomplete_event_size,
            max_fields=config.limit_request_fields,
            max_body_size=config.limit_request_body,
        )
        self.cycle: HTTPCycle | None = None
        self.close_after_response = False
        self._read_paused = False
        self._writes = WriteFlow()
        # Deadlines (loop.time()) checked by the worker's timeout sweep: no timer per request.
        self._idle_deadline: float | None = None
        self._head_deadline: float | None = None
        self._discard_left: int | None = None
        self._announced_close = False  # bytes of unread request body still skippable

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.state.draining:
            # Accepted by a generation that is going away: serve one request, then close.
            self.close_after_response = True
        self._start_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.connections.discard(self)
        self._cancel_timers()
        if self.cycle is not None:
            self.cycle.mark_disconnected()
        self._writes.release()

    def eof_received(self) -> bool | None:
        if not self.closing:
            self.h1.feed(b"")
            self._process()
        return None  # the transport closes (a lingering close ends here)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            self.discard(data)  # closing gracefully: read and discard until the client's EOF
            return
        self._idle_deadline = None
        if self.cycle is None and self._head_deadline is None:
            self._head_deadline = self.loop.time() + self.state.config.timeout_request_header
        self.h1.feed(data)
        self._process()

    def pause_writing(self) -> None:
        self._writes.pause()

    def resume_writing(self) -> None:
        self._writes.resume()

    # -- event processing ------------------------------------------------------------------
    def _process(self) -> None:
        if self.closing:
            return
        for event in self.h1.next_events():
            if isinstance(event, BodyChunk):
                if self.cycle is not None:
                    self.cycle.feed_body(event.data)
                elif self._discard_left is not None:
                    self._discard_left -= len(event.data)
                    if self._discard_left < 0:
                        self._close()  # too much unread body to skip: give up on keep-alive
                        return
            elif isinstance(event, RequestHead):
                self._on_request(event)
            elif isinstance(event, RequestEnd):
                if self.cycle is not None:
                    self.cycle.end_body()
                elif self._discard_left is not None:
                    # The unread body is skipped: carry on with the next request.
                    self._discard_left = None
                    self._next_cycle()
                    return
            elif isinstance(event, BadRequest):
                self._reject(event.status)
                return
            elif isinstance(event, ClientEOF):
                if self.cycle is not None:
                    self.cycle.mark_disconnected()
                self._close()
                return
        if self.h1.paused and self.cycle is not None:
            # A pipelined request is waiting in h11's buffer; stop reading until our turn.
            self._pause_reading()

    def _on_request(self, head: RequestHead) -> None:
        self._head_deadline = None
        state = self.state
        if state.config.http2 and self.scheme == "http" and self._upgrade_to_h2c(head):
            return  # 101 sent; the request continues as HTTP/2 stream 1
        http_version = head.http_version.decode("ascii")
        try:
            scope = http_scope(
                method=head.method,
                target=head.target,
                http_version=http_version,
                headers=head.headers,
                scheme=self.scheme,
                server=self.server,
                client=self.client,
                root_path=state.root_path,
                state=state.lifespan_state,
            )
        except (UnicodeDecodeError, ValueError):
            self._reject(400)
            return
        if state.trusted is not None:
            apply_proxy_headers(scope, state.trusted)
        if (
            state.config.ws != "none"
            and head.method == b"GET"
            and is_websocket_upgrade(head.headers)
        ):  # while stopping too: the session closes it with 1001 right after the handshake
            self._upgrade_to_websocket(head)
            return
        verdict = state.admit(scope["path"], head.headers)
        cycle = HTTPCycle(
            scope,
            self,
            extra_headers=state.default_headers(),
            force_close=(self.close_after_response or state.draining or state.shutting_down
                         or verdict.refused),
            on_pause_reading=self._pause_reading,
        )
        self.cycle = cycle
        state.start_cycle(self.loop, cycle, verdict, state.app)

    def _upgrade_to_h2c(self, head: RequestHead) -> bool:
        """``Upgrade: h2c``: answer 101 and hand the transport to an H2Protocol."""
        if self.transport is None or self.closing:
            return False
        protocol = h2c_upgrade(self.state, self.loop, head)
        if protocol is None:
            return False
        take_over(self.transport, self, protocol, preamble=SWITCHING_H2C,
                  buffered=self.h1.trailing_bytes())
        return True

    def _upgrade_to_websocket(self, head: RequestHead) -> None:
        """Hand the transport to a WSProtocol; wsproto re-parses the handshake itself."""
        assert self.transport is not None
        state = self.state
        scope = websocket_scope(
            head_target=head.target, headers=head.headers,
            scheme="wss" if self.scheme == "https" else "ws", server=self.server,
            client=self.client, root_path=state.root_path, state=state.lifespan_state,
            trusted=state.trusted,
        )
        lines = [head.method + b" " + head.target + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in head.headers]
        handshake = b"\r\n".join(lines) + b"\r\n\r\n" + self.h1.trailing_bytes()
        take_over(self.transport, self, WSProtocol(state, self.loop, scope), buffered=handshake)

    def release_transport(self) -> None:
        """``switch.Releasing``: another protocol takes this connection over."""
        self.closing = True
        self._cancel_timers()
        self.state.connections.discard(self)
        self._resume_reading()

    def _reject(self, status: int) -> None:
        """Answer a protocol error or a timed-out head with *status* and close."""
        if self.transport is None or self.closing:
            return
        if self.cycle is not None and self.cycle.response_started:
            self._close()
            return
        self.transport.write(self.h1.error_response(status))
        self._close()

    # -- CycleOwner ------------------------------------------------------------------------
    def write_response(self, status: int, headers: Headers, body: bytes, end: bool) -> None:
        if self.closing or self.transport is None:
            return
        if (self.close_after_response or self.h1.waiting_for_continue) and all(
            n != b"connection" for n, _ in headers
        ):
            # Waiting for 100-continue and answered without it: the body may never come.
            headers.append((b"connection", b"close"))
            self.close_after_response = True
        # Remember whether this response told the client we close: only then may we close
        # right after it (a keep-alive response followed by a close races the next request).
        self._announced_close = any(
            n == b"connection" and b"close" in v.lower() for n, v in headers
        )
        h1 = self.h1
        data = h1.response_head(status, headers)
        if body:
            data += h1.body(body)
        if end:
            data += h1.end()
        self.transport.write(data)

    def write_body(self, data: bytes, end: bool) -> None:
        if self.closing or self.transport is None:
            return
        out = self.h1.body(data)
        if end:
            out += self.h1.end()
        if out:
            self.transport.write(out)

    async def wait_writable(self) -> None:
        if not self.closing:
            await self._writes.wait()

    def want_body(self) -> None:
        if self._read_paused and not self.closing and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def send_continue(self) -> None:
        if self.h1.waiting_for_continue and not self.closing and self.transport is not None:
            self.transport.write(self.h1.continue_100())

    def abort(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            self.transport.abort()

    def cycle_done(self, cycle: HTTPCycle) -> None:
        if cycle is not self.cycle:
            return
        self.cycle = None
        self.state.request_done(cycle, cycle.scope["http_version"], self.client_str)
        if self.closing or self.transport is None:
            return
        if cycle.disconnected or self._announced_close or not cycle.response_complete:
            self._close()
            return
        if self.h1.body_unread:
            # The app answered without reading the whole body: read and discard the rest (up
            # to a bound) so the connection stays usable and no reset reaches the client.
            self._discard_left = DISCARD_BODY_LIMIT
            self._resume_reading()
            self._process()
            return
        self._next_cycle()

    def _next_cycle(self) -> None:
        if self.transport is None or self.closing:
            return
        if not self.h1.start_next_cycle():
            self._close()  # the client asked to close, or the protocol says we must
            return
        self._resume_reading()
        self._process()
        if self.cycle is None and not self.closing:
            if self.h1.has_buffered_bytes:
                self._head_deadline = self.loop.time() + self.state.config.timeout_request_header
            elif self.close_after_response:
                # Draining began while this keep-alive response was already on its way: hand
                # the now idle connection to the new generation, or give it the drain grace.
                if not self._hand_off():
                    self.start_draining()
            else:
                self._start_idle_timer()

    def _resume_reading(self) -> None:
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    # -- Connection (drain / stop) ---------------------------------------------------------
    def start_draining(self) -> None:
        """Answer the next request with ``Connection: close``; an idle connection gets a short
        grace to send one (closing it at once races a request already on the wire)."""
        self.close_after_response = True
        if self.h1.has_buffered_bytes or self.h1.request_in_progress:
            return  # a request is arriving: it is answered (with close), never cut off
        if self.cycle is None and not self.closing:
            soon = self.loop.time() + min(DRAIN_IDLE_CLOSE, self.state.config.timeout_keep_alive)
            if self._idle_deadline is None or soon < self._idle_deadline:
                self._idle_deadline = soon
            if self.state.handoff is not None and self._writes_pending():
                # Not detachable while the last response is still being written: try again
                # once it is out (within the grace above).
                self.loop.call_later(HANDOFF_RETRY, self._retry_hand_off)

    def _writes_pending(self) -> bool:
        return self.transport is not None and bool(self.transport.get_write_buffer_size())

    def _hand_off(self) -> bool:
        """Give this idle connection to the new generation, if there is one to take it."""
        handoff = self.state.handoff
        sock = self.detach_if_idle() if handoff is not None else None
        if sock is None or handoff is None:
            return False
        handoff(sock)
        return True

    def _retry_hand_off(self) -> None:
        if self.state.handoff is None or self.closing or self.cycle is not None:
            return
        if not self._hand_off() and self._writes_pending():
            self.loop.call_later(HANDOFF_RETRY, self._retry_hand_off)

    def detach_if_idle(self) -> socket.socket | None:
        """Hand this idle connection's socket to another loop (thread-mode reload); None when
        a request is in progress or bytes are buffered."""
        if self.cycle is not None or self.closing or self.transport is None:
            return None
        if self.h1.has_buffered_bytes or self.h1.request_in_progress:
            return None
        sock = detach_transport_socket(self.transport)
        if sock is not None:
            self.closing = True
            self._cancel_timers()
            self.state.connections.discard(self)
        return sock

    def force_close(self) -> None:
        """The grace ran out: end a streaming response properly (final chunk) if the protocol
        allows, so the client sees a complete response rather than a truncated one."""
        cycle = self.cycle
        if cycle is not None:
            if cycle.response_started and cycle.pending_head is None and not self.closing \
                    and self.transport is not None:
                try:
                    self.transport.write(self.h1.end())
                except h11.LocalProtocolError:
                    pass  # a fixed-length body cannot be ended early: the close says it
            cycle.mark_disconnected()
        self._close(graceful=False)

    # -- helpers ---------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._read_paused and not self.closing and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def _close(self, *, graceful: bool = True) -> None:
        """Close gracefully (FIN, then discard what the client still sends until its EOF, see
        ``TCPConnection.close_gracefully``) so a response is never destroyed by a reset; a
        forced close just closes."""
        if self.closing or self.transport is None:
            if not graceful:
                self.end_lingering()
            return
        self.closing = True
        self._cancel_timers()
        if graceful:
            self._read_paused = False  # lingering reads (and discards) again
            self.close_gracefully()
        else:
            self.transport.close()

    def _cancel_timers(self) -> None:
        self._idle_deadline = None
        self._head_deadline = None

    def _start_idle_timer(self) -> None:
        self._idle_deadline = self.loop.time() + self.state.config.timeout_keep_alive

    def check_timeouts(self, now: float) -> None:
        """Called by the worker's sweep: close idle connections, 408 a slow request head, cut
        a lingering close that lasted too long."""
        if self.closing:
            self.check_linger(now)
            return
        if self.cycle is not None:
            return
        if self._head_deadline is not None and now >= self._head_deadline:
            self._head_deadline = None
            self._reject(408)
        elif self._idle_deadline is not None and now >= self._idle_deadline:
            self._idle_deadline = None
            self._close()

