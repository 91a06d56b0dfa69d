"""Taking a connection's socket away from its event loop for a reload's hand-over
(``devserve.serve.state.detach_transport_socket``), on real sockets and real loops (asyncio and
uvloop, as workers run them): never while a response is still being written — aborting the
transport would drop its tail, and the client would wait for an answer that never comes."""

from __future__ import annotations

import asyncio
import socket

import pytest

from devserve.serve.state import detach_transport_socket
from devserve.workers.loop import close_loop, new_event_loop

PAYLOAD = 8 << 20  # more than a socket pair buffers: the rest waits in the transport


@pytest.mark.parametrize("setting", ["asyncio", "uvloop"])
def test_a_socket_is_detached_only_once_what_was_written_is_out(setting: str) -> None:
    loop = new_event_loop(setting)
    server_sock, client_sock = socket.socketpair()
    client_sock.setblocking(False)

    async def scenario() -> bytes:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server_sock)
        transport.write(b"x" * PAYLOAD)
        assert transport.get_write_buffer_size() > 0
        assert detach_transport_socket(transport) is None
        assert not transport.is_closing()
        received = 0
        while received < PAYLOAD:  # the client reads it all: the transport's buffer empties
            received += len(await asyncio.wait_for(loop.sock_recv(client_sock, 1 << 20), 5.0))
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        sock = detach_transport_socket(transport)
        assert sock is not None
        with sock:
            sock.sendall(b"after")  # the kernel connection lives on in the detached socket
        return await asyncio.wait_for(loop.sock_recv(client_sock, 16), 5.0)

    try:
        assert loop.run_until_complete(scenario()) == b"after"
    finally:
        close_loop(loop)
        client_sock.close()
