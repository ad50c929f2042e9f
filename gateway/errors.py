"""Errors of the gateway.

`ConfigError` is a mistake in the site configuration: the message names the key
path, the bad value and what is expected, so the operator can fix the file
without reading code.  `StorageError` is a database the gateway cannot use
(written by a newer version, not a hushlight database).  `StateError` is a saved
policy state that cannot be restored.  Bad input from the network is never an
exception: it is counted and skipped where it arrives.
"""

from __future__ import annotations

__all__ = ["ConfigError", "GatewayError", "ScheduleError", "StateError", "StorageError"]


class GatewayError(Exception):
    """Base class of the gateway's errors."""


class ConfigError(GatewayError):
    """The site configuration is invalid; the message says which key and why."""


class ScheduleError(ConfigError):
    """A schedule window does not parse; the message quotes it and shows the expected form."""


class StorageError(GatewayError):
    """The database cannot be used; the message names the file and what to do."""


class StateError(GatewayError):
    """A saved policy state cannot be restored; the message says what is wrong with it."""
