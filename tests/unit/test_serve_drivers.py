"""The asyncio connection drivers (devserve/serve/) on an in-memory transport: real client bytes
in, real server bytes out, on a real event loop, no server process.

Every connection is built the way a worker builds it, by ``serve.sniff.protocol_factory`` over a
``WorkerState`` of a real ``Config``, so these tests hold the drivers to the wire and not to
their constructors. The server's bytes are read back with independent client libraries (h11,
h2, wsproto)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import h2.config
import h2.connection
import h2.events
import h11
import pytest
import wsproto
import wsproto.events
from conftest import wait_until_async

from devserve.config import Config
from devserve.serve.sniff import protocol_factory
from devserve.serve.state import WorkerState

from .fakes import PEER, MemoryTransport

TIMEOUT = 5.0
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """HTTP: ``<method> <path> from <client host>`` plus the request body; WebSocket: accept,
    then echo text messages."""
    if scope["type"] == "websocket":
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": "echo " + message["text"]})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = f"{scope['method']} {scope['path']} from {scope['client'][0]}".encode() + body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(text))]})
    await send({"type": "http.response.body", "body": text})


def worker_state(**options: Any) -> WorkerState:
    """As devserve.workers.worker.Worker builds it: Config in, WorkerState of one slot."""
    return WorkerState(Config(app=app, access_log=False, **options), app, slot=0, generation=1)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), 2 * TIMEOUT)
    asyncio.run(bounded())


def connect(state: WorkerState, scheme: str = "http") -> MemoryTransport:
    """An accepted connection: the protocol the worker's server would build, on a transport."""
    loop = asyncio.get_running_loop()
    transport = MemoryTransport(loop)
    transport.connect(protocol_factory(state, loop, scheme)())
    return transport


async def hang_up(transport: MemoryTransport) -> None:
    """The client goes away; the driver gets connection_lost and leaves the worker's set."""
    if not transport.closed:
        transport.close()
    await wait_until_async(lambda: transport.lost, TIMEOUT, "connection_lost delivered")


class H11Reader:
    """An h11 client that has sent *requests* (method, target) and reads the answers."""

    def __init__(self, *requests: tuple[str, str]) -> None:
        self.client = h11.Connection(h11.CLIENT)
        self.requests = list(requests)
        self.responses: list[tuple[h11.Response, bytes]] = []
        self._current: h11.Response | None = None
        self._body = b""
        self._send_next()

    def _send_next(self) -> None:
        method, target = self.requests[len(self.responses)]
        self.client.send(h11.Request(method=method, target=target, headers=[("host", "x")]))
        self.client.send(h11.EndOfMessage())

    def receive(self, data: bytes) -> list[tuple[h11.Response, bytes]]:
        """Parse *data*; returns every response complete so far."""
        if data:  # h11 takes b"" for end of file
            self.client.receive_data(data)
        while len(self.responses) < len(self.requests):
            event = self.client.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                break
            if isinstance(event, h11.Response):
                self._current, self._body = event, b""
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self._current is not None
                self.responses.append((self._current, self._body))
                if len(self.responses) < len(self.requests):
                    self.client.start_next_cycle()
                    self._send_next()
        return self.responses


def drain_past_the_grace(state: WorkerState) -> None:
    """What a draining worker does to its connections, then its sweep once the idle grace
    (0.5 s) is over."""
    state.draining = True
    for conn in list(state.connections):
        conn.start_draining()
    later = asyncio.get_running_loop().time() + 1.0
    for conn in list(state.connections):
        conn.check_timeouts(later)


def raw_request(method: str, target: str, body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {target} HTTP/1.1\r\nHost: x\r\n{length}\r\n".encode() + body


# -- HTTP/1.1 ------------------------------------------------------------------------------------


def test_get_is_answered_with_the_apps_bytes_and_the_connection_stays_open() -> None:
    async def scenario() -> None:
        state = worker_state()
        transport = connect(state)
        transport.feed(raw_request("GET", "/hello?x=1"))
        reader = H11Reader(("GET", "/hello?x=1"))
        [(response, body)] = await wait_until_async(lambda: reader.receive(transport.take()),
                                                    TIMEOUT, "the response")
        assert response.status_code == 200
        assert body == f"GET /hello from {PEER[0]}".encode()
        headers = dict(response.headers)
        assert headers[b"content-length"] == b"%d" % len(body)
        assert headers[b"server"] == b"devserve" and b"date" in headers
        assert b"connection" not in headers  # HTTP/1.1 keep-alive is the default
        assert not transport.closed and len(state.connections) == 1
        await hang_up(transport)
        assert not state.connections

    run(scenario)


def test_two_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    async def scenario() -> None:
        state = worker_state()
        transport = connect(state)
        transport.feed(raw_request("POST", "/first", b"one") + raw_request("GET", "/second"))
        reader = H11Reader(("POST", "/first"), ("GET", "/second"))
        responses = await wait_until_async(
            lambda: len(reader.receive(transport.take())) == 2 and reader.responses,
            TIMEOUT, "both responses")
        assert [(r.status_code, body) for r, body in responses] == [
            (200, b"POST /first from 127.0.0.1one"), (200, b"GET /second from 127.0.0.1")]
        assert not transport.closed
        assert state.total_requests == 2
        await hang_up(transport)

    run(scenario)


def test_a_drain_closes_an_idle_connection_gracefully_but_never_cuts_off_a_request() -> None:
    """While a worker drains, an idle keep-alive connection gets a short grace, then FIN (it
    keeps reading, and discarding, until the client's EOF). One whose request head is still
    arriving is not cut off at that grace: the request is answered, with Connection: close."""
    async def scenario() -> None:
        state = worker_state()
        idle, arriving = connect(state), connect(state)
        arriving.feed(b"GET /late HTTP/1.1\r\nHost: x\r\n")  # the head is not complete
        drain_past_the_grace(state)
        assert idle.eof_written and not idle.closed  # FIN sent, still reading
        idle.feed(b"GET / HTTP/1.1\r\n")  # too late: read and discarded, no answer
        assert idle.take() == b"" and not idle.closed
        idle.feed_eof()
        assert idle.closed
        assert not arriving.eof_written and not arriving.closed
        arriving.feed(b"\r\n")
        reader = H11Reader(("GET", "/late"))
        [(response, body)] = await wait_until_async(lambda: reader.receive(arriving.take()),
                                                    TIMEOUT, "the response")
        assert (response.status_code, body) == (200, b"GET /late from 127.0.0.1")
        assert dict(response.headers)[b"connection"] == b"close"
        await wait_until_async(lambda: arriving.eof_written, TIMEOUT, "a graceful close")
        await hang_up(arriving)
        await hang_up(idle)
        assert not state.connections

    run(scenario)


@pytest.mark.parametrize("protocol", ["http1", "h2c"])
def test_a_forced_close_cuts_a_connection_that_lingers_for_the_clients_eof(protocol: str
                                                                           ) -> None:
    """A drained connection closes gracefully (FIN, then reads until the client's EOF). When
    the worker's grace runs out it force-closes what is left, and that must end a lingering
    one too: a worker whose loop closes with a transport still open crashes (EBUSY)."""
    async def scenario() -> None:
        state = worker_state()
        transport = connect(state)
        if protocol == "http1":
            transport.feed(raw_request("GET", "/"))
            reader = H11Reader(("GET", "/"))
            await wait_until_async(lambda: reader.receive(transport.take()), TIMEOUT,
                                   "the response")
        else:
            transport.feed(h2_client().data_to_send())  # preface and SETTINGS, no stream
        drain_past_the_grace(state)
        await wait_until_async(lambda: transport.eof_written, TIMEOUT, "a graceful close")
        assert not transport.closed and state.connections  # lingering for the client's EOF
        for conn in list(state.connections):
            conn.force_close()
        assert transport.closed, "a forced close left the connection lingering"
        await wait_until_async(lambda: not state.connections, TIMEOUT, "the connection gone")

    run(scenario)


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: x\r\nno colon in this header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
], ids=["header-without-colon", "bad-content-length", "garbage-request-line"])
def test_malformed_request_gets_400_and_the_connection_closes(request_bytes: bytes) -> None:
    async def scenario() -> None:
        state = worker_state()
        transport = connect(state)
        transport.feed(request_bytes)
        # Closed gracefully: FIN after the answer, then it reads until the client's EOF.
        await wait_until_async(lambda: transport.eof_written, TIMEOUT, "the server closing")
        head, _, body = transport.take().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 400 Bad Request", head
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        assert headers[b"connection"] == b"close"
        assert int(headers[b"content-length"]) == len(body)
        assert state.total_requests == 0  # the app never saw it
        await hang_up(transport)
        assert not state.connections

    run(scenario)


# -- HTTP/2 with prior knowledge (h2c) -----------------------------------------------------------


def h2_client() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding="utf-8"))
    client.initiate_connection()
    return client


def test_h2c_prior_knowledge_preface_is_answered_with_http2_frames() -> None:
    async def scenario() -> None:
        state = worker_state()
        transport = connect(state)
        client = h2_client()
        for sid, path in ((1, "/a"), (3, "/b")):  # two concurrent streams
            client.send_headers(sid, [(":method", "GET"), (":scheme", "http"),
                                      (":authority", "x"), (":path", path)], end_stream=True)
        transport.feed(client.data_to_send())
        events: list[h2.events.Event] = []

        def both_ended() -> bool:
            events.extend(client.receive_data(transport.take()))
            return sum(isinstance(e, h2.events.StreamEnded) for e in events) == 2

        await wait_until_async(both_ended, TIMEOUT, "both streams ended")
        assert isinstance(events[0], h2.events.RemoteSettingsChanged)  # the server's preface
        statuses = {e.stream_id: dict(e.headers)[":status"] for e in events
                    if isinstance(e, h2.events.ResponseReceived)}
        bodies: dict[int, bytes] = {}
        for e in events:
            if isinstance(e, h2.events.DataReceived):
                bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
        assert statuses == {1: "200", 3: "200"}
        assert bodies == {1: b"GET /a from 127.0.0.1", 3: b"GET /b from 127.0.0.1"}
        assert not any(isinstance(e, h2.events.StreamReset | h2.events.ConnectionTerminated)
                       for e in events)
        assert not transport.closed
        await hang_up(transport)
        assert not state.connections

    run(scenario)


# -- WebSocket ---------------------------------------------------------------------------------


def test_websocket_upgrade_handshake_is_answered_101_and_echoes() -> None:
    async def scenario() -> None:
        state = worker_state()
        transport = connect(state)
        client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        handshake = client.send(wsproto.events.Request(host="x", target="/ws"))
        key = next(line.split(b": ", 1)[1] for line in handshake.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        transport.feed(handshake)
        answer = await wait_until_async(transport.take, TIMEOUT, "the handshake answer")
        head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        assert head[0] == b"HTTP/1.1 101 Switching Protocols", answer
        headers = {k.lower(): v for k, v in (line.split(b": ", 1) for line in head[1:])}
        assert headers[b"upgrade"].lower() == b"websocket"
        assert headers[b"sec-websocket-accept"] == base64.b64encode(
            hashlib.sha1(key + WS_GUID).digest())
        client.receive_data(answer)
        assert isinstance(next(client.events()), wsproto.events.AcceptConnection)

        transport.feed(client.send(wsproto.events.TextMessage(data="hi")))
        echo = await wait_until_async(transport.take, TIMEOUT, "the echo")
        client.receive_data(echo)
        message = next(client.events())
        assert isinstance(message, wsproto.events.TextMessage) and message.data == "echo hi"

        transport.feed(client.send(wsproto.events.CloseConnection(code=1000)))
        await wait_until_async(lambda: transport.closed, TIMEOUT, "the server closing")
        client.receive_data(transport.take())
        closed = next(client.events())
        assert isinstance(closed, wsproto.events.CloseConnection) and closed.code == 1000
        await hang_up(transport)
        assert not state.connections

    run(scenario)
