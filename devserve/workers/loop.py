"""Event loops for workers, the async pool and sync threads: made in one place (``--loop``) and
torn down in one place, so no worker leaves a loop (and what its tasks hold) alive after it ends.
"""

from __future__ import annotations

import asyncio


def new_event_loop(setting: str) -> asyncio.AbstractEventLoop:
    """A fresh loop per ``--loop``: uvloop if asked for (or auto and installed), else asyncio."""
    if setting in ("auto", "uvloop"):
        try:
            import uvloop  # optional; imported only when a loop is made
        except ImportError:
            if setting == "uvloop":
                raise
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on *loop* (waiting for it to unwind), finish async generators,
    then close the loop; called on the thread that ran it."""
    try:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
