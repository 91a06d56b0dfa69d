"""Sockets and TLS, below every protocol: ``sockets`` binds the listening TCP, Unix-domain and
HTTP/3 UDP sockets (or takes an inherited ``--fd``) once, for the Supervisor to own; ``tls``
builds the server's ``SSLContext`` and the ``--https`` development certificate.

Imports: ``devserve.config`` and ``devserve.errors`` only.
"""
