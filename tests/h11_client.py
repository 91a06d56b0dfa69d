"""An independent h11 client reading exactly one response from raw bytes (for raw-socket and
sans-IO tests of the server's HTTP/1.1 framing)."""

from __future__ import annotations

import h11


def only_response(data: bytes) -> tuple[h11.Response, bytes]:
    """The single complete response in *data*; any byte after it is an error."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    response, body = None, b""
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert event is not h11.NEED_DATA, f"incomplete response: {data!r}"
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
    assert response is not None
    assert client.trailing_data[0] == b"", f"more than one response: {data!r}"
    return response, body
