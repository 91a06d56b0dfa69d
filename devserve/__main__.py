"""``python -m devserve``: the same as the ``devserve`` command."""

from devserve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
