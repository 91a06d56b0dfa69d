"""Sans-IO protocol adapters: bytes in, events out; no sockets, clocks or event loops here."""
