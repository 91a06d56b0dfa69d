"""Supervision: what the Supervisor (``devserve.supervisor``, the facade) is made of.

- ``coalesce``: the serialised reload/restart runner (one at a time, one follow-up, none lost).
- ``rollout``: the pure state machine of one worker (named states, time passed in).
- ``slots``: worker slots with their crash budgets (``budget``) and ONE crash/respawn path for
  TCP and HTTP/3 workers.
- ``generations``: start, promote, retire a generation; reload, restart and the final stop.
- ``launch``: picking thread or process mode, and the two launchers behind one Protocol;
  ``child``: what a spawned worker process runs; ``ipc``: the typed messages between them;
  ``check``: the fresh-process check of an edit; ``escalate``: what follows it.
- ``handles``: a running worker; ``h3``: HTTP/3 workers; ``signals``: SIGINT/SIGTERM/SIGHUP and
  the stop request; ``options``: what the composition root hands the Supervisor.

May import: ``devserve.reload``, ``devserve.workers``, ``devserve.serve``, ``devserve.asgi`` and
the bottom modules (config, errors, lifecycle, logs). Never the Supervisor, server or display.
"""
