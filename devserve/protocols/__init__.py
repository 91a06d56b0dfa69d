"""Sans-IO protocol adapters: bytes in, typed events out, bytes to send back; no sockets, clocks
or event loops here (time is passed in), so each is unit-tested with real bytes alone.

- ``http1``: HTTP/1.1 over h11 (strict framing screen, limits, error responses) and the one
  reason-phrase table;
- ``http2``: an HTTP/2 server connection over h2 (rapid-reset guard, two-phase GOAWAY drain,
  flow control credited as the app reads); ``http2_fields``: RFC 9113 field rules and the h2c
  upgrade check;
- ``http3``: HTTP/3 over aioquic, and the endpoint that routes datagrams to connections;
  ``aioquic_internals``: the one place that touches aioquic's private names;
- ``websocket``: WebSocket over wsproto (handshake, frames, permessage-deflate).

Imports: the protocol libraries and each other; nothing else of devserve (every layer above may
import this one).
"""
