"""hushlight sensor firmware (MicroPython): level meter, capture, MQTT publishing."""

import sys


def once(name):
    """The module hushlight.`name`, imported for one use: code that runs
    rarely (start-up, a connection's set-up, a console command, the stop)
    does not stay in the heap between uses."""
    full = "hushlight." + name
    __import__(full)
    mod = sys.modules.pop(full)
    package = sys.modules["hushlight"]
    if hasattr(package, name):
        delattr(package, name)
    return mod
