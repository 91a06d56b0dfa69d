"""The reload engine: from a saved file to the new code serving, the cheapest trustworthy way.

- ``watcher``: watchfiles on the project's directories, ignored trees pruned before watching,
  a quiet period that batches an editor's writes into one ``ChangeSet``.
- ``reloader``: classifies a batch (stylesheets → browser-only, templates/assets → template-only,
  anything else → re-import) and hands it to the Supervisor; ``[tool.devserve]`` → re-exec.
- ``importer`` (with ``recorder``, ``graph``, ``staging``, ``widen``, ``resolve``): loads the app
  while recording the project's import graph, and re-imports only what an edit affects, staged
  (all or nothing), widening to owners of shared state, escalating when it cannot be trusted.
- ``frameworks``: what frameworks cache outside the project (Django's URL resolver, admin
  registry, template loaders; Flask's Jinja2 cache), which edits need a fresh process, static
  files under Django's ``DEBUG``.
- ``livereload``: the browser channel (script injection, SSE, stylesheet swap, error overlay).

Imports: ``asgi``, ``config``, ``errors``, ``lifecycle`` (and the frameworks an app already
loaded); never ``serve``, ``workers``, ``supervision`` or anything above them.
"""
