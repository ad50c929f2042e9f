"""Helpers of the sensor's update tests (tests/firmware/test_ota.py,
tests/ota/test_sensor_ota.py): releases built by `hushlight release`, virtual
sensors that take them (`hushlight sensor --release-key`), served by the
release server of tools/ota_serve.py over a real Mosquitto.

Everything waits by polling with asyncio.sleep: the release server runs on
the test's event loop, so nothing here may block it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.tools.virtual import Sensor, Sub
from tools import release, upy
from tools.broker import Mosquitto
from tools.ota_serve import Release, ReleaseServer

SITE = "ota-sensor"
OLD = "0.1.0"  # the checkout's FW_VERSION: what a virtual sensor runs first
NEW = "0.2.0"


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path
    other_private: Path  # a key the sensors do not trust


def make_keys(folder: Path, bits: int = 2048) -> Keys:
    private, public = release.generate_key(folder / "city", bits)
    other, _ = release.generate_key(folder / "other", 2048)
    return Keys(private, public, other)


def firmware_copy(folder: Path, module: str, old: str, new: str) -> Path:
    """A copy of firmware/ with one text replaced in hushlight/`module`."""
    target = folder / "firmware"
    shutil.copytree(upy.FIRMWARE_DIR / "hushlight", target / "hushlight")
    path = target / "hushlight" / module
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} is not in {module} exactly once"
    path.write_text(text.replace(old, new))
    return target


def build(keys: Keys, version: str, out: Path, interp: str, firmware: Path | None = None) -> Path:
    return release.build_release(
        keys.private,
        version,
        out,
        to=release.target(interp),
        firmware=firmware or upy.FIRMWARE_DIR,
    )


def checked_build(keys: Keys, version: str, out: Path, interp: str) -> release.Bundle:
    """Release `version` of this checkout's firmware for `interp`, read back and checked."""
    return release.check_bundle(build(keys, version, out, interp), keys.public)


def resigned(bundle: release.Bundle, key: Path, manifest: bytes) -> Release:
    """The bundle's files under another manifest, signed with `key`."""
    sig = release.sign(release.load_private_key(key), manifest)
    data = manifest + bundle.release_bytes()[len(bundle.manifest) :]
    parsed = manifest.decode().split("\n")[1].split()[1]
    offer = {**bundle.offer(), "version": parsed, "size": len(manifest), "total": len(data)}
    offer["sig"] = base64.b64encode(sig).decode()
    return Release(parsed, offer, data)


async def poll(pred: Callable[[], Any], within: float, what: str, why: Callable[[], str]) -> Any:
    """pred()'s first true value, checked every 0.1 s for `within` s."""
    deadline = time.monotonic() + within
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {within} s\n{why()}")
        await asyncio.sleep(0.1)


class OtaSensor:
    """A virtual sensor that trusts `keys.public`, with its records and
    statuses watched (`records` is shared by the sensors of a test); at
    16 kHz without a console unless told (`rate`, `console`: the heap is
    at its tightest at 48 kHz with the console open)."""

    def __init__(
        self,
        tmp: Path,
        broker: Mosquitto,
        sensor: str,
        keys: Keys,
        records: Sub,
        server: ReleaseServer,
        rate: int = 16000,
        console: bool = False,
        **config: Any,
    ) -> None:
        self.rate = rate
        self.console = console
        self.tmp = tmp
        self.broker = broker
        self.id = sensor
        self.keys = keys
        self.records = records
        self.server = server
        self.state = tmp / f"st-{sensor}"
        self.state.mkdir(parents=True, exist_ok=True)
        if config:  # settings `hushlight sensor` keeps (e.g. ota_trial_s)
            (self.state / "config.json").write_text(json.dumps(config))
        self.proc: Sensor | None = None
        self.runs: list[Sensor] = []

    def start(self) -> None:
        args = ["--id", self.id, "--site", SITE, "--broker", self.broker.url]
        args += ["--synthetic", "street", "--rate", str(self.rate), "--keepalive", "5"]
        args += ["--state-dir", str(self.state), "--release-key", str(self.keys.public)]
        if self.console:
            args.append("--console")
        self.proc = Sensor(self.tmp, *args)
        self.runs.append(self.proc)

    def kill(self) -> None:
        """SIGKILL: the firmware, then `hushlight sensor` (a power cut)."""
        assert self.proc is not None
        self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None and self.proc.proc.poll() is None:
            self.proc.stop()

    def output(self) -> str:
        return "\n".join(run.output() for run in self.runs)

    def status(self) -> dict[str, Any]:
        return self.server.statuses.get(self.id, {})

    def seqs(self) -> list[int]:
        """The seq of every levels record received from this sensor (sorted, once each)."""
        leaf = f"/sensors/{self.id}/levels"
        return sorted({v["seq"] for t, v in list(self.records.messages) if t.endswith(leaf)})

    async def wait_status(
        self, pred: Callable[[dict[str, Any]], bool], within: float, what: str
    ) -> dict[str, Any]:
        """The sensor's last status once `pred` holds for it."""

        def why() -> str:
            return f"last status: {self.status()}\n--- sensor output ---\n{self.output()[-4000:]}"

        status: dict[str, Any] = await poll(
            lambda: pred(self.status()) and self.status(), within, what, why
        )
        return status

    async def wait_line(self, text: str, within: float) -> None:
        await poll(lambda: text in self.output(), within, repr(text), lambda: self.output()[-4000:])

    async def wait_records_after(self, seq: int, within: float) -> int:
        """The newest seq once a record newer than `seq` came."""
        newer = await poll(
            lambda: [s for s in self.seqs() if s > seq],
            within,
            f"a levels record after seq {seq}",
            lambda: self.output()[-4000:],
        )
        return int(newer[-1])

    def slot_files(self) -> list[str]:
        """Files in the update slots (a refused staging leaves none)."""
        return sorted(
            str(p.relative_to(self.state)) for p in (self.state / "ota").rglob("*") if p.is_file()
        )
