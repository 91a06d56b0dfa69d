"""Connection drivers: what happens on one connection, from its first bytes to its close.

Each driver moves bytes between a transport (asyncio, or a blocking socket) and a sans-IO
protocol from ``devserve.protocols``, and runs the app through ``devserve.asgi``:

- ``sniff``: picks HTTP/1.1 or HTTP/2 for a new connection (ALPN, or the h2c preface);
- ``h1``, ``h2`` (+ ``h2_stream``, ``h2_ws``), ``h3``: HTTP/1.1, HTTP/2 (WebSocket over
  extended CONNECT included), HTTP/3 on asyncio; ``ws`` + ``ws_session``: WebSocket;
- ``blocking_h1`` + ``blocking_conn``: HTTP/1.1 on blocking sockets for the sync workers;
- ``admission``: the one decision every driver makes per request (health, drain, shutdown,
  ``--limit-concurrency``, body size); ``responses``: the server's own answers;
- ``switch``: the one protocol takeover (sniffer to h1/h2, h1 to h2c, h1 to WebSocket);
- ``state``: per-worker state shared by a worker's connections (admission and starting a
  request's cycle included), and ``TCPConnection``, what H1Protocol and H2Protocol share;
- ``flow``: where an app's ``send()`` waits for the connection to take more (backpressure).

Imports: ``devserve.asgi``, ``devserve.protocols`` and the bottom layer (config, errors,
lifecycle, logs, net). Never ``workers``, ``supervision``, ``reload``, ``server`` or
``display``: a worker passes in what a driver needs from it, typed by a small Protocol here
(``h3.H3Owner``, ``blocking_h1.SyncOwner``). Inside the package imports go one way, with no
cycle (``h2_stream.StreamHost`` is how a stream sees its connection).
"""
