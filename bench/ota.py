"""How long `hushlight ota` takes to roll a release out to the demo's seven sensors.

The demo's street (`tools/demo_config.toml`: site leuven, ns-01 to ns-07 in
two zones of four that share ns-04), its sensors running as in the demo (the
firmware in the 32-bit "device" MicroPython, 16 kHz audio at real time, one
record a second, keepalive 5 s) on a private Mosquitto, each given the
release key.  A release one version up is built and signed
(`hushlight release`), then `hushlight ota --now` rolls it out with its
defaults (one canary, then waves of at most 0.34 of each zone: one sensor per
zone here).  `--now` because the demo's zones are active at night and a
benchmark runs at any hour.

Printed: the time the roll-out took (from `hushlight ota`'s start to its
summary) and each phase's; records lost (seq numbers that never arrived, per
sensor, from before the roll-out to after it: 0 expected, the records of a
reboot wait in the sensor's store); the most sensors of each zone updating at
once, from the statuses recorded here.

    .venv/bin/python bench/ota.py [--interpreter device|host] [--version 0.2.0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

# the checkout first: this folder's dsp.py would otherwise shadow the dsp package
ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

from tools import release, upy  # noqa: E402 -- after the path fix above
from tools.broker import Mosquitto  # noqa: E402
from tools.demo import SITE, config_text, site_config  # noqa: E402
from tools.upy import REPO_ROOT  # noqa: E402

BOOT_S = 180.0
AFTER_S = 60.0  # wall seconds to wait for every sensor's records after the roll-out
BUSY = ("staging", "staged", "trial")
DONE = ("confirmed", "refused", "rolled_back")


class Recorder:
    """Every status and record of the site, in arrival order, over a persistent
    QoS 1 session (so a record the broker took is not missed here)."""

    def __init__(self, port: int) -> None:
        self.lock = threading.Lock()
        self.statuses: list[tuple[float, str, dict[str, Any]]] = []
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="bench-ota-recorder", clean_session=False
        )
        self.client.on_message = self._message
        self.client.on_connect = self._connect
        self.ready = threading.Event()  # before the network thread can call _connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _connect(self, client: paho.Client, *_: Any) -> None:
        root = f"hushlight/v1/{SITE}/sensors/+/"
        client.subscribe([(root + "status", 1), (root + "levels", 1)])
        self.ready.set()

    def _message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        try:
            value = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(value, dict):
            return
        with self.lock:
            if parts[-1] == "status":
                self.statuses.append((time.monotonic(), parts[-2], value))
            elif parts[-1] == "levels" and isinstance(value.get("seq"), int):
                self.seqs[parts[-2]].append(value["seq"])

    def latest(self, sensor: str) -> dict[str, Any]:
        with self.lock:
            for _, s, v in reversed(self.statuses):
                if s == sensor:
                    return v
        return {}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait(what: str, pred: Any, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise SystemExit(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.2)


def peaks(rec: Recorder, version: str, since: float) -> dict[str, int]:
    zones = {z.id: set(z.sensors) for z in site_config().zones}
    updating: set[str] = set()
    out = dict.fromkeys(zones, 0)
    with rec.lock:
        timeline = [(s, v) for t, s, v in rec.statuses if t >= since]
    for sensor, status in timeline:
        if status.get("ota_version") != version:
            continue
        if status.get("ota") in BUSY:
            updating.add(sensor)
        elif status.get("ota") in DONE:
            updating.discard(sensor)
        for z, members in zones.items():
            out[z] = max(out[z], len(updating & members))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interpreter", choices=upy.NAMES, default="device")
    parser.add_argument("--version", default="0.2.0", help="the release's version")
    args = parser.parse_args()
    sensors = sorted({s for z in site_config().zones for s in z.sensors})
    with tempfile.TemporaryDirectory() as tmp, Mosquitto() as broker:
        work = Path(tmp)
        key, pub = release.generate_key(work, bits=2048)
        t0 = time.monotonic()
        bundle = release.build_release(
            key, args.version, work / "releases", to=release.target(args.interpreter)
        )
        print(f"release {args.version} built and signed in {time.monotonic() - t0:.1f} s")
        site = work / "site.toml"
        site.write_text(config_text(broker.url, str(work / "demo.db"), 8080, "bench", "x" * 32))
        rec = Recorder(broker.port)
        rec.ready.wait(10)
        procs = []
        try:
            for sensor in sensors:
                cmd = [sys.executable, "-m", "tools.cli", "sensor", "--id", sensor, "--site", SITE]
                cmd += ["--broker", broker.url, "--synthetic", "street", "--rate", "16000"]
                cmd += ["--interval", "1", "--keepalive", "5", "--interpreter", args.interpreter]
                cmd += ["--release-key", str(pub), "--state-dir", str(work / sensor)]
                with (work / f"{sensor}.log").open("wb") as log:
                    procs.append(
                        subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
                    )
            t0 = time.monotonic()
            wait(
                "the sensors online",
                lambda: all(rec.latest(s).get("state") == "online" for s in sensors),
                BOOT_S,
            )
            old = {s: rec.latest(s).get("fw") for s in sensors}
            versions = ", ".join(sorted({str(v) for v in old.values()}))
            print(f"{len(sensors)} sensors online on {versions} in {time.monotonic() - t0:.1f} s")
            since = time.monotonic()
            cmd = [sys.executable, "-m", "tools.cli", "ota", "--release", str(bundle)]
            cmd += ["--pub", str(pub), "--broker", broker.url, "--site", SITE]
            cmd += ["--config", str(site), "--now", "--json"]
            done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
            wall = time.monotonic() - since
            try:
                report = json.loads(done.stdout)
            except ValueError:
                print(done.stdout + done.stderr)
                return 1
            # every sensor's records after the roll-out: its reboot's backlog came through
            last = {s: max(rec.seqs[s], default=-1) for s in sensors}
            wait(
                "records after the roll-out",
                lambda: all(max(rec.seqs[s], default=-1) > last[s] + 2 for s in sensors),
                AFTER_S,
            )
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
            rec.close()
    print(
        f"\nhushlight ota, {len(sensors)} sensors ({args.interpreter} MicroPython), "
        f"{report.get('phases') and len(report['phases'])} phases, exit status {done.returncode}"
    )
    print(f"  roll-out took {report['seconds']:.1f} s ({wall:.1f} s with the command's start)")
    for phase in report["phases"]:
        secs = phase["seconds"]
        took = "-" if secs is None else f"{secs:5.1f} s"
        print(f"  {phase['name']:<8} {took}  {', '.join(phase['sensors'])}")
    outcomes = defaultdict(list)
    for sensor, r in report["sensors"].items():
        outcomes[r["outcome"]].append(sensor)
    print("  outcomes: " + "; ".join(f"{k} {len(v)}" for k, v in sorted(outcomes.items())))
    if report.get("halted"):
        print(f"  halted: {report['halted']}")
    lost = 0
    received = 0
    for s in sensors:
        seqs = set(rec.seqs[s])
        received += len(seqs)
        if seqs:
            lost += max(seqs) - min(seqs) + 1 - len(seqs)
    print(f"  records lost: {lost} of {received + lost} (every sensor, before to after)")
    limits = report.get("limits", {})
    peak = peaks(rec, args.version, since)
    print(
        "  most updating at once: "
        + ", ".join(f"{z} {n} (limit {limits.get(z, '?')})" for z, n in sorted(peak.items()))
    )
    return 0 if done.returncode == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
