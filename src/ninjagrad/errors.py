"""The one exception type that the CLI turns into a single line and exit status 2."""


class UsageError(Exception):
    """Bad input from a person: a malformed file, an impossible flag, a corrupt checkpoint.

    The message is shown as it is, on one line, so it must name the file (and line) and the fix.
    """
