"""The ASGI (and WSGI) bridge, independent of any transport: ``scope`` builds request scopes
(proxy headers included), ``cycle`` runs one request/response against a connection's
``CycleOwner`` (backpressure, disconnect), ``lifespan`` runs startup/shutdown, ``wsgi`` runs a
WSGI app against a response sink, ``types`` holds the shared type aliases.

Imports: ``devserve.protocols`` and the bottom layer (config, errors, lifecycle, logs, net);
never the connection drivers in ``devserve.serve`` or anything above them.
"""
