"""`hushlight ota` end to end: virtual sensors on the 32-bit "device" MicroPython, a
real Mosquitto, releases built and signed by `hushlight release`.

Four sensors in two zones sharing one of them; with --max-share 0.5 each
zone may have one sensor updating at a time, so after the canary the plan
needs two waves.  The statuses the sensors publish are recorded here, apart
from the tool, and checked: no zone ever had more than its limit updating
at once, every sensor ends confirmed on the new version, and every sensor's
records arrive without a gap in their seq throughout.  And a release whose
self-test fails (built from a firmware copy patched so that its DSP-load
check fails) rolls back on its canary, which halts the roll-out with the
reason; the other sensors are never offered it.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.ota.site import write_site
from tests.tools.virtual import Sensor, Sub, publish
from tools import release, upy
from tools.broker import Mosquitto
from tools.ota import BUSY, zone_limits

SITE = "ota-e2e"
ZONES = {"north": ["n-1", "n-2", "both"], "south": ["both", "s-1"]}
SENSORS = ("both", "n-1", "n-2", "s-1")
MAX_SHARE = "0.5"
GOOD = "0.2.0"
BAD = "0.3.0"
# the bad release's trial gives up this soon (config key ota_trial_s; 120 s by default)
TRIAL_S = 8
BOOT_S = 120.0
ROLLOUT_S = 600.0
DONE = ("confirmed", "refused", "rolled_back")
TZ = ZoneInfo("Europe/Brussels")


@dataclass
class Street:
    broker: Mosquitto
    site: Path
    pub: Path
    key: Path
    work: Path
    statuses: Sub
    levels: Sub
    sensors: dict[str, Sensor]


def _quiet_hours() -> str:
    """A schedule window that is not active now: three hours from now, for an hour."""
    start = dt.datetime.now(TZ) + dt.timedelta(hours=3)
    end = start + dt.timedelta(hours=1)
    return f"{start:%H:%M}-{end:%H:%M}"


def _latest(sub: Sub, sensor: str) -> dict[str, Any]:
    for topic, value in reversed(sub.messages):
        if topic.endswith(f"/{sensor}/status") and isinstance(value, dict):
            return value
    return {}


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Street]:
    work = tmp_path_factory.mktemp("ota-street")
    key, pub = release.generate_key(work, bits=2048)
    site = write_site(work / "site.toml", SITE, ZONES, _quiet_hours())
    with Mosquitto() as broker:
        root = f"hushlight/v1/{SITE}/sensors"
        statuses = Sub(broker.port, f"{root}/+/status")
        levels = Sub(broker.port, f"{root}/+/levels", client_id=f"{SITE}-levels")
        sensors: dict[str, Sensor] = {}
        try:
            _ready(broker, statuses, f"{root}/probe/status")
            _ready(broker, levels, f"{root}/probe/levels")
            for sensor in SENSORS:
                state = work / "sensors" / sensor
                state.mkdir(parents=True)
                (state / "config.json").write_text(json.dumps({"ota_trial_s": TRIAL_S}))
                sensors[sensor] = Sensor(
                    work,
                    *("--id", sensor, "--site", SITE, "--broker", broker.url),
                    *("--synthetic", "quiet", "--rate", "16000", "--interval", "1"),
                    *("--release-key", str(pub), "--state-dir", str(state)),
                    *("--interpreter", "device"),
                )
            for sensor in SENSORS:
                statuses.wait_for(
                    lambda t, v, s=sensor: (
                        t.endswith(f"/{s}/status")
                        and isinstance(v, dict)
                        and v.get("state") == "online"
                    ),
                    BOOT_S,
                    f"{sensor} online",
                )
            yield Street(broker, site, pub, key, work, statuses, levels, sensors)
        finally:
            for s in sensors.values():
                s.stop()
            statuses.close()
            levels.close()


def _ready(broker: Mosquitto, sub: Sub, topic: str) -> None:
    """Block until `sub` hears what is published now on `topic` (one its wildcard matches)."""
    probe = uuid.uuid4().hex
    deadline = time.monotonic() + 10.0
    while True:
        publish(broker.port, topic, json.dumps(probe))
        try:
            sub.wait_for(lambda t, v: v == probe, 0.5, "probe")
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def _build(street: Street, version: str, firmware: Path = upy.FIRMWARE_DIR) -> Path:
    return release.build_release(
        street.key,
        version,
        street.work / "releases",
        to=release.target("device"),
        firmware=firmware,
    )


def _ota(street: Street, bundle: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tools.cli", "ota", "--release", str(bundle)),
            *("--pub", str(street.pub), "--broker", street.broker.url, "--site", SITE),
            *("--config", str(street.site), "--max-share", MAX_SHARE, "--json", *args),
        ],
        cwd=upy.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=ROLLOUT_S,
        check=False,
    )
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = {}
    return done.returncode, report, done.stdout + done.stderr


def _peaks(
    timeline: Sequence[tuple[str, Any]], zones: Mapping[str, Sequence[str]], version: str
) -> tuple[dict[str, int], int]:
    """From statuses in arrival order: the most sensors of each zone updating
    to `version` at once, and the most in the whole site."""
    updating: set[str] = set()
    peak = {z: 0 for z in zones}
    site_peak = 0
    for topic, status in timeline:
        if not isinstance(status, dict) or status.get("ota_version") != version:
            continue
        sensor = topic.split("/")[-2]
        if status.get("ota") in BUSY:
            updating.add(sensor)
        elif status.get("ota") in DONE:
            updating.discard(sensor)
        for z, members in zones.items():
            peak[z] = max(peak[z], len(updating & set(members)))
        site_peak = max(site_peak, len(updating))
    return peak, site_peak


def _check_no_gaps(street: Street) -> None:
    """Every sensor's records so far: one each seq from its first to its last,
    and some from after the roll-out (the backlog of the reboots came through)."""
    start = {s: max(_seqs(street, s), default=-1) for s in SENSORS}
    for sensor in SENSORS:
        street.levels.wait_for(
            lambda t, v, s=sensor: t.endswith(f"/{s}/levels") and v["seq"] > start[s] + 2,
            60.0,
            f"new records from {sensor}",
        )
    for sensor in SENSORS:
        seqs = sorted(set(_seqs(street, sensor)))
        missing = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
        assert not missing, f"{sensor}: records {missing[:20]} never arrived"


def _seqs(street: Street, sensor: str) -> list[int]:
    return [
        v["seq"]
        for t, v in list(street.levels.messages)
        if t.endswith(f"/{sensor}/levels") and isinstance(v, dict)
    ]


def test_a_canary_that_rolls_back_halts_the_rollout(street: Street) -> None:
    started = time.monotonic()
    patched = street.work / "firmware-bad"
    shutil.copytree(upy.FIRMWARE_DIR, patched)
    commands = patched / "hushlight" / "commands.py"
    text = commands.read_text()
    assert text.count("if load <= 25:") == 1, "the DSP-load check moved: patch it anew"
    commands.write_text(text.replace("if load <= 25:", "if load <= -1:"))
    bundle = _build(street, BAD, patched)
    before = {s: _latest(street.statuses, s).get("fw") for s in SENSORS}
    mark = len(street.statuses.messages)

    code, report, out = _ota(street, bundle, "--canary", "n-1")

    assert code == 1, out
    assert report["halted"].startswith("canary n-1 rolled back"), out
    assert "dsp_load" in report["halted"], out
    assert report["sensors"]["n-1"]["outcome"] == "rolled_back"
    others = [s for s in SENSORS if s != "n-1"]
    assert {report["sensors"][s]["outcome"] for s in others} == {"not_started"}
    # the canary runs its previous version again, and says why
    street.statuses.wait_for(
        lambda t, v: (
            t.endswith("/n-1/status")
            and v.get("state") == "online"
            and v.get("ota") == "rolled_back"
            and v.get("fw") == before["n-1"]
        ),
        BOOT_S,
        "n-1 back on its version",
    )
    timeline = street.statuses.messages[mark:]
    for s in others:
        assert _latest(street.statuses, s).get("fw") == before[s]
        assert not [v for t, v in timeline if f"/{s}/" in t and v.get("ota_version") == BAD]
    _check_no_gaps(street)
    print(f"halting canary: {time.monotonic() - started:.1f} s")


def test_a_rollout_in_waves_within_each_zones_share(street: Street) -> None:
    started = time.monotonic()
    bundle = _build(street, GOOD)
    mark = len(street.statuses.messages)

    code, report, out = _ota(street, bundle)

    assert code == 0, out
    assert report["ok"] and report["halted"] is None, out
    waves = [p for p in report["phases"] if p["name"].startswith("wave")]
    assert len(waves) >= 2, report["phases"]
    for sensor in SENSORS:
        assert report["sensors"][sensor]["outcome"] == "confirmed", out
        last = _latest(street.statuses, sensor)
        assert (last.get("fw"), last.get("ota")) == (GOOD, "confirmed"), (sensor, last)
    limits = zone_limits(ZONES, float(MAX_SHARE))
    peak, site_peak = _peaks(street.statuses.messages[mark:], ZONES, GOOD)
    assert all(peak[z] <= limits[z] for z in ZONES), (peak, limits)
    # the check above saw updates at all, and sensors of different zones together
    assert all(peak[z] >= 1 for z in ZONES) and site_peak >= 2, (peak, site_peak)
    _check_no_gaps(street)
    print(f"roll-out in waves: {time.monotonic() - started:.1f} s")
