"""A site config for the roll-out tests: zones of sensors, with a schedule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

# a sensor's online status as the tests' sensors publish it
ONLINE = {
    "state": "online",
    "fw": "0.1.0",
    "uptime_s": 50,
    "free_mem": 21000,
    "dsp_load": 0.04,
    "buffered": 0,
    "calibration_offset_db": 0.0,
    "ota": "idle",
}


def write_site(path: Path, site: str, zones: Mapping[str, Sequence[str]], schedule: str) -> Path:
    """A site config at `path` with `zones` (zone -> sensors), each active in `schedule`."""
    lines = [f'[site]\nid = "{site}"\ntimezone = "Europe/Brussels"\n']
    for zone, sensors in zones.items():
        listed = ", ".join(f'"{s}"' for s in sensors)
        lines.append(
            f'[[zones]]\nid = "{zone}"\nsensors = [{listed}]\n'
            f'light_groups = ["{zone}-lamps"]\nschedule = ["{schedule}"]\n'
        )
    path.write_text("\n".join(lines))
    return path
