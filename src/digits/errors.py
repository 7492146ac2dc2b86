"""Errors the CLI turns into a message and an exit code, never a traceback."""


class DigitsError(Exception):
    """A failure the user can act on; `exit_code` is what the CLI returns."""

    exit_code = 1


class InputError(DigitsError, ValueError):
    """Bad user input (a data file, a submission, a config): exit code 2."""

    exit_code = 2


class KaggleError(DigitsError):
    """The Kaggle service or client refused or failed, with advice on what to do."""

    exit_code = 1
