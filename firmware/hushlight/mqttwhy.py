"""A few words on a failure of the MQTT link, for last_error and the log,
and the step to the next broker of a list after a failed connection
(hushlight.mqtt).  Loaded when something failed and dropped again
(hushlight.once): a link that works does not keep this code in the heap.
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
    # (the TLS library's messages begin with a line break)
    text = str(e).strip()
    return "%s: %s" % (type(e).__name__, text) if text else type(e).__name__


def connect_failed(c, e, failed):
    """After the `failed`-th connection attempt in a row of client `c` failed
    with `e`: close it, say why, and move on to the next broker of the list;
    True while that next broker is one this round of the list has not tried."""
    c._close()
    c.stats["connect_failures"] += 1
    if not isinstance(e, _Refused):  # the client described a refusal already
        c.last_error = "cannot connect to %s:%d: %s" % (c.host, c.port, describe(e))
    n = len(c.brokers)
    if n > 1:
        c._at = (c._at + 1) % n
        c.url, c.host, c.port = c.brokers[c._at]
    return failed % n != 0
