"""Error types, and the CLI wrapper that turns bad input into one line on stderr.

Library code raises `ValueError`, or one of the domain errors below (all `InputError`, itself a
`ValueError`): a data file, a model directory, a tracking server, a configuration that is wrong. Only the
command line (`cli_main`) turns an `InputError` into `error: ...` and exit code 2; any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys


class InputError(ValueError):
    """Bad input that the user can fix; the message is one line and says what to change."""


class DataError(InputError):
    """A data directory or file is missing or malformed."""


class ModelError(InputError):
    """A model directory, hub id or shipped weights file is missing or not a model."""


class ConfigError(InputError):
    """A trial configuration, search space or evaluation setting is unknown or out of range."""


class TrackingError(InputError):
    """The MLflow tracking store cannot be reached."""


class ClusterError(InputError):
    """Ray cannot be reached at the given address, or cannot be started."""


class StorageError(InputError):
    """The storage for Ray Tune's state and checkpoints (--storage-path) cannot be used."""


class StudyError(InputError):
    """A study directory is missing, corrupt or already taken, or its records cannot be used."""


class UsageError(InputError):
    """Bad command-line input (arguments, a study directory that is not one)."""


def cli_main(main):
    """Decorate a CLI `main(argv) -> int`: an InputError becomes `error: ...` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        try:
            return main(argv)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
