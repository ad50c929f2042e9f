"""`hushlight ota` refuses what it must before it offers anything: each mistake one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ota.site import ONLINE, write_site
from tests.tools.virtual import Sub, publish
from tools import release
from tools.broker import Mosquitto
from tools.upy import REPO_ROOT

SITE = "cli"
ZONES = {"north": ["n-1", "n-2"]}


@dataclass
class Setup:
    broker: Mosquitto
    work: Path
    bundle: Path
    pub: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("ota-cli")
    key, pub = release.generate_key(work, bits=2048)
    bundle = release.build_release(key, "0.2.0", work / "releases", to=release.target("device"))
    with Mosquitto() as broker:
        for sensor in ZONES["north"]:
            topic = f"hushlight/v1/{SITE}/sensors/{sensor}/status"
            publish(broker.port, topic, json.dumps(ONLINE), retain=True)
        yield Setup(broker, work, bundle, pub)


def _ota(s: Setup, *args: str, schedule: str = "00:00-24:00") -> subprocess.CompletedProcess[str]:
    site = write_site(s.work / "site.toml", SITE, ZONES, schedule)
    base = ["--release", str(s.bundle), "--pub", str(s.pub), "--broker", s.broker.url]
    base += ["--site", SITE, "--config", str(site)]
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "ota", *base, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_no_start_inside_a_zones_active_hours(setup: Setup) -> None:
    offers = Sub(setup.broker.port, f"hushlight/v1/{SITE}/sensors/+/ota/offer")
    try:
        done = _ota(setup)
        assert done.returncode == 2, done.stdout + done.stderr
        error = done.stderr.strip().splitlines()
        assert len(error) == 1, done.stderr
        assert "inside active hours (Europe/Brussels): zone north (00:00-24:00, until" in error[0]
        assert error[0].endswith("or give --now")
        # the plan was shown, nothing offered
        assert "canary: n-1" in done.stdout and "wave 1: n-2" in done.stdout
        publish(setup.broker.port, f"hushlight/v1/{SITE}/sensors/probe/ota/offer", "end")
        offers.wait_for(lambda t, v: v == "end", 10.0, "the probe")
        assert [v for _, v in offers.messages] == ["end"]
    finally:
        offers.close()


def test_mistakes_are_one_line_each(setup: Setup) -> None:
    tampered = setup.work / "tampered"
    if not tampered.exists():
        shutil.copytree(setup.bundle, tampered)
        victim = sorted((tampered / "files" / "hushlight").iterdir())[0]
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0xFF  # one byte changed, the size kept
        victim.write_bytes(bytes(data))
    cases = [
        (["--max-share", "0"], "--max-share 0 is out of range"),
        (["--canary", "n-9"], "--canary: canary n-9 is not among the sensors to update"),
        (["--sensors", "n-1,x-7"], "--sensors: x-7 neither in"),
        (["--pub", str(setup.work / "none.pub")], "none.pub: no such file"),
        (["--release", str(tampered)], "differs from the signed manifest"),
        (["--trial-timeout", "-1"], "--trial-timeout -1 is out of range"),
    ]
    for args, message in cases:
        done = _ota(setup, *args, schedule="03:00-03:01")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
