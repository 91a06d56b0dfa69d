"""Worker lifecycles: how a worker starts, serves, drains and stops — not what happens on a
connection (that is ``devserve.serve``).

- ``base``: ``TCPWorker``, everything the Supervisor may rely on in a TCP worker, and
  ``LoopWorker``, the one lifecycle all workers share (mode ladder running < draining <
  shutdown < force, lifespan around serving, one tick for deadlines and WorkerStats, the drain
  bounded by ``grace``, loop teardown);
- ``worker``: ``Worker``, asyncio/uvloop on a TCP listener; ``h3_worker``: ``H3Worker``, QUIC
  on a UDP socket; ``sync_worker``: ``SyncWorker``, blocking threads for WSGI and
  ``--execution sync``, fed by ``accept_distributor`` (accept thread, idle-connection parking,
  bounded queue) with ASGI lifespans on ``async_pool``;
- ``loop``: making (``--loop``) and closing event loops, for all of the above.

Imports: ``devserve.serve``, ``devserve.asgi``, ``devserve.protocols`` and the bottom layer
(config, errors, lifecycle, logs, net). Never ``supervision``, ``reload``, ``server``,
``supervisor`` or ``display``: the Supervisor drives workers through ``TCPWorker``, not the
other way round.
"""
