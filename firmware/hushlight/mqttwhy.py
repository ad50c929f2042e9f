"""A few words on a failure of the MQTT link, for last_error and the log
(hushlight.mqtt).  Loaded when something failed and dropped again
(hushlight.once): a link that works does not keep these sentences in the heap.
"""

import asyncio
from errno import ECONNREFUSED, EHOSTUNREACH

from hushlight.mqtt import _Refused


def describe(e):
    """A few words on exception `e` of the link, for last_error and the log."""
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, _Refused):
        return "refused, CONNACK code %d" % e.args[0]
    if isinstance(e, OSError):
        if len(e.args) > 1:  # a sentence of ours, or the TLS library's error name
            return str(e.args[1])
        if e.errno == ECONNREFUSED:
            return "connection refused (nothing listens on that port: is the broker running?)"
        if e.errno == EHOSTUNREACH:
            return "host unreachable (check the network and the broker's address)"
    return "%s %s" % (type(e).__name__, e)
