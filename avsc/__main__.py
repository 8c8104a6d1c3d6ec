"""``python -m avsc``: the same entry point as the ``avsc`` console script."""

from avsc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
