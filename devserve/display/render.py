"""Pure rich renderables of a :class:`Snapshot`; tested by rendering into a capture Console."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from devserve.display.model import ReloadRow, Snapshot

STATE_STYLE = {
    "starting": "yellow",
    "ready": "green",
    "draining": "cyan",
    "stopped": "dim",
    "crashed": "red",
    "failed": "bold red",
}


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _status_style(status: int) -> str:
    if status >= 500:
        return "bold red"
    if status >= 400:
        return "yellow"
    if status >= 300:
        return "cyan"
    return "green"


def header(s: Snapshot, now: float) -> RenderableType:
    text = Text()
    text.append("devserve ", style="bold magenta")
    text.append(s.app or "?", style="bold")
    # First line, so it never wraps or scrolls away: which generation serves right now.
    text.append(f" · generation {s.generation}", style="bold")
    for url in s.urls:
        text.append("  ")
        text.append(url, style="underline cyan")
    text.append("\n")
    gil = "GIL on" if s.gil_enabled else "free-threaded"
    text.append(f"{s.mode} mode ({s.mode_reason}) · {gil} · Python {s.python} · pid {s.pid}"
                f" · up {_age(now - s.started_at) if s.started_at else '0s'}", style="dim")
    if s.stopping:
        text.append(f"\nstopping: {s.stopping}", style="bold yellow")
        if s.stop_phase:
            text.append(f" · {s.stop_phase}", style="yellow")
    return text


def workers_table(s: Snapshot, now: float) -> RenderableType:
    table = Table(title="workers", title_justify="left", expand=True, pad_edge=False)
    for col, justify in (("slot", "right"), ("gen", "right"), ("worker", "left"),
                         ("state", "left"), ("conns", "right"), ("in-flight", "right"),
                         ("served", "right"), ("restarts", "right"), ("uptime", "right")):
        table.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in s.workers:
        restarts = f"{row.restarts_used}/{row.budget}"
        if row.next_backoff is not None and row.state == "crashed":
            restarts += f" (next in {row.next_backoff:.1f}s)"
        table.add_row(
            str(row.slot), str(row.generation), row.ident,
            Text(row.state, style=STATE_STYLE.get(row.state, "")),
            str(row.connections), str(row.in_flight), str(row.requests), restarts,
            _age(now - row.started_at) if row.started_at else "",
        )
    return table


def strategy_cell(row: ReloadRow) -> Text:
    """``partial · 3 modules``, and on a second line why a cheaper strategy was not enough."""
    text = Text(row.strategy)
    if row.modules is not None:
        text.append(f" · {row.modules} module" + ("" if row.modules == 1 else "s"))
    if row.reason:
        text.append("\n" + row.reason, style="dim")
    return text


def reloads_table(s: Snapshot) -> RenderableType:
    table = Table(title="reloads", title_justify="left", expand=True, pad_edge=False)
    for col in ("gen", "trigger", "strategy", "detect→import→ready→drained", "outcome"):
        table.add_column(col, no_wrap=col != "trigger", overflow="ellipsis")
    for row in reversed(s.reloads):
        phases = dict(row.phases)
        detect = (
            f"{(row.started_at - row.requested_at) * 1000:.0f}"
            if row.requested_at is not None else "-"
        )
        timing = " → ".join([
            detect,
            f"{phases['import'] * 1000:.0f}" if "import" in phases else "-",
            f"{phases['ready'] * 1000:.0f}" if "ready" in phases else "-",
            f"{phases['drained'] * 1000:.0f}" if "drained" in phases else
            (f"{phases['total'] * 1000:.0f}" if "total" in phases else "-"),
        ]) + " ms"
        outcome = Text(row.outcome, style={"ok": "green", "failed": "bold red"}.get(
            row.outcome, "yellow"))
        trigger = ", ".join(row.trigger) or "manual"
        table.add_row(str(row.generation), trigger, strategy_cell(row), timing, outcome)
    return table


def error_panel(s: Snapshot) -> RenderableType | None:
    if s.error is None:
        return None
    body = Text(s.error.message, style="bold red")
    if s.error.location:
        body.append(f"\n  at {s.error.location}", style="yellow")
    if s.error.traceback:
        body.append("\n\n" + s.error.traceback.rstrip(), style="red")
    return Panel(body, title="error (kept serving the previous generation)",
                 border_style="red", title_align="left")


def requests_panel(s: Snapshot, now: float) -> RenderableType:
    table = Table(title=f"requests · {s.req_per_second(now):.1f} req/s · {s.total_requests} total",
                  title_justify="left", expand=True, show_header=False, pad_edge=False)
    table.add_column("method", no_wrap=True)
    table.add_column("path", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for row in s.requests:
        table.add_row(row.method, row.path, Text(str(row.status), style=_status_style(row.status)),
                      f"{row.duration * 1000:.1f} ms")
    return table


KEYS_HELP = Text("r reload · R restart · c clear error · l request log · q quit", style="dim")


def dashboard(s: Snapshot, now: float, *, show_requests: bool = True,
              keys: bool = True) -> RenderableType:
    parts: list[RenderableType] = [header(s, now), workers_table(s, now)]
    if s.reloads:
        parts.append(reloads_table(s))
    err = error_panel(s)
    if err is not None:
        parts.append(err)
    if show_requests:
        parts.append(requests_panel(s, now))
    if keys:
        parts.append(KEYS_HELP)
    return Panel(Group(*parts), border_style="magenta", padding=(0, 1))
