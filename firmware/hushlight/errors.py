"""Errors of the sensor firmware.

`ConfigError`: a setting (config.json, a remote config, a console `set`, a
source) that cannot be used; the message names the value and what to do.
Start-up stops on it; at run time the old setting stays and the message is
reported (status `config_error`, console reply).
"""


class FirmwareError(Exception):
    pass


class ConfigError(FirmwareError):
    pass
