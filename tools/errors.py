"""Errors of the command line.

A `UsageError` is a mistake in what the user asked for (a bad argument, a file
in the wrong format, a port that does not exist).  The command line prints its
message on one line and exits with status 2; no traceback.
"""


class ToolError(Exception):
    """Base class of the command line's errors."""


class UsageError(ToolError):
    """The user asked for something that cannot be done; the message says why and what to do."""
