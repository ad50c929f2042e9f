"""A sensor's update that goes wrong, on the 32-bit "device" MicroPython
(hushlight.ota, otaboot.py; the happy path and the refusals:
tests/firmware/test_ota.py).

A version whose self-test cannot pass (built from a firmware copy whose
microphone check asks for 200 dB) rolls back by itself when its trial time
is up; a version that dies at import without an exception the loader could
catch rolls back through the boot counter; one that raises at import rolls
back at once.

The kill walk: for every step of an update (the `ota_hold` test hook of the
unix port), a sensor is held there and SIGKILLed, then started again.  It
must boot a complete version (its status names the old or the new one), go
on measuring and publishing, and finish the update: here every step ends
confirmed on the new version, the staging resumed where it stopped.  The
sensors of each test run side by side, so the walk takes the time of one
update.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.firmware.ota_kit import (
    NEW,
    OLD,
    SITE,
    Keys,
    OtaSensor,
    build,
    firmware_copy,
    make_keys,
    poll,
)
from tests.tools.virtual import Sub
from tools import release, upy
from tools.broker import Mosquitto
from tools.ota_serve import ReleaseServer

DEVICE = "device"
SELFTEST_FAILS = "0.2.1"
DIES_AT_IMPORT = "0.2.2"
RAISES_AT_IMPORT = "0.2.3"
# the steps of an update, in order (otastate.step)
STEPS = (
    "offer",
    "manifest",
    "verified",
    "file",
    "staged",
    "switch",
    "switched",
    "trial_boot",
    "confirm",
)


@pytest.fixture(autouse=True)
def _device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(upy.ENV_VAR, DEVICE)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Keys, dict[str, release.Bundle]]:
    keys = make_keys(tmp_path_factory.mktemp("keys"))
    out = tmp_path_factory.mktemp("releases")
    copies = {
        SELFTEST_FAILS: ("commands.py", "_MIC_ALIVE_DB = 25.0", "_MIC_ALIVE_DB = 200.0"),
        # SystemExit is no Exception: the process ends, as a hard fault would
        DIES_AT_IMPORT: ("app.py", "\nimport gc\n", "\nimport gc\n\nraise SystemExit(3)\n"),
        RAISES_AT_IMPORT: ("app.py", "\nimport gc\n", "\nimport gc\n\nraise ImportError('x')\n"),
    }
    bundles = {NEW: build(keys, NEW, out, DEVICE)}
    for version, (module, old, new) in copies.items():
        firmware = firmware_copy(tmp_path_factory.mktemp(version), module, old, new)
        bundles[version] = build(keys, version, out, DEVICE, firmware)
    return keys, {v: release.check_bundle(p, keys.public) for v, p in bundles.items()}


@pytest.fixture
def records(broker: Mosquitto) -> Iterator[Sub]:
    sub = Sub(broker.port, f"hushlight/v1/{SITE}/sensors/+/levels")
    yield sub
    sub.close()


def _statuses(server: ReleaseServer) -> dict[str, list[dict[str, Any]]]:
    """Every status each sensor published, in order."""
    seen: dict[str, list[dict[str, Any]]] = {}
    server.on_status.append(lambda who, st: seen.setdefault(who, []).append(st))
    return seen


async def _rolls_back(
    s: OtaSensor, server: ReleaseServer, version: str, reason: str
) -> dict[str, Any]:
    s.start()
    await s.wait_status(lambda st: st.get("fw") == OLD, 60, "the online status")
    seq = await s.wait_records_after(-1, 30)
    await server.offer(s.id, version)
    st = await s.wait_status(
        lambda st: st.get("ota") == "rolled_back" and st.get("fw") == OLD, 90, "the rollback"
    )
    assert (st["fw"], st["ota_version"]) == (OLD, version), st
    assert reason in st["ota_reason"], st
    # back on the old version, measuring and publishing
    await s.wait_records_after(max(seq, max(s.seqs())), 30)
    return st


async def test_versions_that_fail_roll_back_by_themselves(
    tmp_path: Path,
    broker: Mosquitto,
    kit: tuple[Keys, dict[str, release.Bundle]],
    records: Sub,
) -> None:
    keys, bundles = kit
    server = ReleaseServer(SITE, list(bundles.values()))
    seen = _statuses(server)
    async with server.connect(broker.url):
        trial = OtaSensor(tmp_path, broker, "rb-selftest", keys, records, server, ota_trial_s=6)
        dies = OtaSensor(tmp_path, broker, "rb-dies", keys, records, server)
        raises = OtaSensor(tmp_path, broker, "rb-raises", keys, records, server)
        try:
            async with asyncio.timeout(150):
                await asyncio.gather(
                    _rolls_back(
                        trial,
                        server,
                        SELFTEST_FAILS,
                        "not confirmed in 6 s: mic: no signal from the microphone",
                    ),
                    _rolls_back(dies, server, DIES_AT_IMPORT, "did not confirm in 3 boots"),
                    _rolls_back(
                        raises,
                        server,
                        RAISES_AT_IMPORT,
                        f"version {RAISES_AT_IMPORT} failed to start: ImportError('x',)",
                    ),
                )
        finally:
            for s in (trial, dies, raises):
                s.stop()
    # the failed version ran: on trial, then it went back to the old one
    assert any(st.get("fw") == SELFTEST_FAILS for st in seen[trial.id])
    assert "ota: rolled back to 0.1.0" in trial.output()
    # the version dying at import booted three times (the third crash rolled it back)
    assert dies.output().count("the firmware crashed (exit status 3)") == 3
    assert raises.output().count("ota: step trial_boot") == 1
    for s in (trial, dies, raises):
        seqs = s.seqs()
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{s.id}: gaps in seq: {seqs}"


async def _kill_walk(
    s: OtaSensor, server: ReleaseServer, seen: list[dict[str, Any]], step: str
) -> None:
    hold = s.state / "ota_hold"
    hold.write_text(step)
    s.start()
    await s.wait_status(lambda st: st.get("fw") == OLD, 60, "the online status")
    seq = await s.wait_records_after(-1, 30)
    await server.offer(s.id, NEW)
    await s.wait_line(f"ota: holding at {step}", 90)
    s.kill()
    hold.unlink()
    before = len(seen)
    seq = max(seq, *s.seqs())
    s.start()
    # the second start-up is over (its heap line ends it: a resumed staging or a
    # trial says so before); a status seen here may still be the killed run's
    await poll(
        lambda: "hushlight: heap:" in s.runs[1].output(),
        60,
        "the second start-up",
        lambda: s.output()[-4000:],
    )
    # a complete version boots, measures and publishes (the broker may tell
    # the killed one's last will first, and a staging that ends reboots into the
    # new version with an offline status between the two onlines)
    await s.wait_status(
        lambda st: any(e["state"] == "online" for e in seen[before:]),
        60,
        "an online status after the restart",
    )
    assert all(e["fw"] in (OLD, NEW) for e in seen[before:] if e["state"] == "online")
    # before the switch (ota.json renamed over) the old version boots and the
    # staging resumes; from then on the new one boots, on trial
    switched = STEPS.index(step) >= STEPS.index("switched")
    second = s.runs[1].output()
    assert (f"update to {NEW} resumes" in second) is not switched, step
    assert (f"version {NEW} on trial" in second.split("hushlight: heap:")[0]) is switched, step
    await s.wait_records_after(seq, 60)
    # and the update ends: staged again where it stopped, or confirmed at the next check
    st = await s.wait_status(lambda st: st.get("ota") == "confirmed", 120, "ota confirmed")
    assert st["fw"] == NEW, st
    state = (s.state / "ota.json").read_text()
    assert '"state": "confirmed"' in state and f'"version": "{NEW}"' in state, state
    assert not (s.state / "ota" / "stage.json").exists()


async def test_killed_at_every_step_of_an_update_it_boots_a_whole_version_and_ends_it(
    tmp_path: Path,
    broker: Mosquitto,
    kit: tuple[Keys, dict[str, release.Bundle]],
    records: Sub,
) -> None:
    keys, bundles = kit
    server = ReleaseServer(SITE, [bundles[NEW]])
    seen = _statuses(server)
    sensors = {
        step: OtaSensor(tmp_path, broker, "kill-" + step.replace("_", "-"), keys, records, server)
        for step in STEPS
    }
    async with server.connect(broker.url):
        try:
            async with asyncio.timeout(240):
                await asyncio.gather(
                    *[
                        _kill_walk(s, server, seen.setdefault(s.id, []), step)
                        for step, s in sensors.items()
                    ]
                )
        finally:
            for s in sensors.values():
                s.stop()
    for step, s in sensors.items():
        assert f"ota: holding at {step}" in s.runs[0].output(), step
        assert len(s.runs) == 2, step


def test_a_release_key_that_is_not_one_is_refused_before_the_sensor_starts(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "release.pub"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot the sensor's format\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.cli", "sensor", "--id", "k1", "--site", SITE,
         "--broker", "mqtt://127.0.0.1:1", "--synthetic", "quiet",
         "--state-dir", str(tmp_path / "st"), "--release-key", str(bad)],
        cwd=upy.REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert f"--release-key {bad}" in err and "hushlight keygen" in err, err
    assert not (tmp_path / "st" / "release.pub").exists()
