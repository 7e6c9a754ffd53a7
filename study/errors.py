"""One exception type for bad input, and the CLI wrapper that turns it into one line on stderr."""

from __future__ import annotations

import functools
import sys


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2, no traceback."""


def cli_main(main):
    """Decorate a CLI `main(argv) -> int`: UsageError becomes `error: ...` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        try:
            return main(argv)
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
