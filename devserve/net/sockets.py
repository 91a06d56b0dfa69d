"""Create the listening sockets once; the Supervisor owns them until final shutdown.

Workers never bind: thread workers get a ``dup()`` of these sockets and process workers inherit
them, so a connection that arrives while workers change waits in the kernel backlog instead of
being refused.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from pathlib import Path

from devserve.config import Config
from devserve.errors import BindError


def bind_socket(config: Config) -> socket.socket:
    """The TCP, Unix-domain or inherited listening socket named by *config*."""
    if config.fd is not None:
        return _from_fd(config.fd, config.backlog)
    if config.uds:
        return _bind_uds(config.uds, config.backlog)
    return _bind_tcp(config.host, config.port, config.backlog)


def _inet_socket(host: str, kind: socket.SocketKind) -> socket.socket:
    """An unbound IPv4 or IPv6 socket for *host*: dual-stack when *host* is every IPv6
    address ("::"), as users expect from it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    if family == socket.AF_INET6 and host in ("::", "[::]"):
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except (AttributeError, OSError):
            pass  # a system without dual-stack sockets: IPv6 only
    return sock


def _bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    sock = _inet_socket(host, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(
            f"could not bind to {host}:{port}: {_describe(exc)}",
            hint=_hint(exc),
        ) from None
    sock.set_inheritable(True)
    return sock


def _bind_uds(path: str, backlog: int) -> socket.socket:
    p = Path(path)
    if p.exists():
        if not stat.S_ISSOCK(p.stat().st_mode):
            raise BindError(f"could not bind to unix socket {path}: a non-socket file exists")
        p.unlink()  # a stale socket file from an earlier run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"could not bind to unix socket {path}: {_describe(exc)}") from None
    sock.set_inheritable(True)
    return sock


def _from_fd(fd: int, backlog: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"--fd {fd} is not a usable socket: {_describe(exc)}") from None
    if sock.type != socket.SOCK_STREAM:
        raise BindError(f"--fd {fd} is not a stream socket")
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def describe_address(sock: socket.socket, scheme: str = "http") -> str:
    """A URL (or unix path) users can click for the bound socket."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"{scheme}+unix://{name}"
    host, port = name[0], name[1]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _describe(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EACCES:
        return "permission denied"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)


def _hint(exc: OSError) -> str | None:
    if exc.errno == errno.EADDRINUSE:
        return "another server is using this port; stop it or pass --port"
    if exc.errno == errno.EACCES:
        return "ports below 1024 need privileges; use a higher --port"
    return None


def bind_udp_socket(host: str, port: int) -> socket.socket:
    """The UDP socket HTTP/3 is served on; like the TCP listener, owned by the Supervisor."""
    sock = _inet_socket(host, socket.SOCK_DGRAM)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise BindError(f"could not bind UDP {host}:{port} for HTTP/3: {_describe(exc)}",
                        hint=_hint(exc) or "pass --http3-port") from None
    sock.set_inheritable(True)
    return sock


def bind_with_udp(config: Config, attempts: int = 10) -> tuple[socket.socket, socket.socket]:
    """TCP listener plus the HTTP/3 UDP socket on the same port number (``--http3-port``
    overrides). With ``--port 0`` the kernel picks the TCP port; if that number is taken on
    UDP, try another pick rather than fail."""
    for attempt in range(attempts):
        sock = bind_socket(config)
        name = sock.getsockname()
        tcp_port = name[1] if isinstance(name, tuple) else 0
        port = config.http3_port if config.http3_port is not None else tcp_port
        try:
            return sock, bind_udp_socket(config.host, port)
        except BindError:
            sock.close()
            if config.port != 0 or config.http3_port is not None or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
