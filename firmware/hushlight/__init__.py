"""hushlight sensor firmware (MicroPython): level meter, capture, MQTT publishing."""

import sys


def once(name):
    """The module hushlight.`name`, imported for one use: code that runs
    rarely (start-up, a connection's set-up, a console command, the stop)
    does not stay in the heap between uses."""
    full = "hushlight." + name
    __import__(full)
    return forget(full)


def forget(full):
    """Drop the module named `full` from the imported ones (None if it was
    not), so that its code goes once nothing else uses it."""
    mod = sys.modules.pop(full, None)
    package, _, name = full.rpartition(".")
    parent = sys.modules.get(package)
    if parent is not None and hasattr(parent, name):
        delattr(parent, name)
    return mod
