"""A sensor's update over the air, on both MicroPythons (hushlight.ota,
otaboot.py): a virtual sensor (`hushlight sensor --release-key`) is offered
releases built by `hushlight release` and served by tools/ota_serve.py
through a real Mosquitto.

A good release is staged, switched to and confirmed, and the records go on
without a gap in their seq across the reboot.  Every kind of bad release is
refused with its reason in status while the sensor runs on unchanged: a
downgrade, the version already running, one that needs a later version, one
signed by another key, one byte changed in the manifest or in a file, a
transfer that stops early, a flash that fills up while the release is
written, and a sensor without a release key.  (Rollbacks and the kill walk:
tests/ota/test_sensor_ota.py.)
"""

from __future__ import annotations

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
    checked_build,
    make_keys,
    resigned,
)
from tests.tools.virtual import Sub
from tools import release
from tools.broker import Mosquitto
from tools.ota_serve import Release, ReleaseServer


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("ota-keys"))


@pytest.fixture(scope="session")
def good(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, upy_interpreter: str
) -> release.Bundle:
    """Release NEW of this checkout's firmware, for the interpreter under test."""
    return checked_build(keys, NEW, tmp_path_factory.mktemp("ota-rel"), upy_interpreter)


@pytest.fixture(scope="session")
def city_key(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The release key `hushlight keygen` makes by default (RSA 3072)."""
    return make_keys(tmp_path_factory.mktemp("ota-keys-3072"), release.DEFAULT_BITS)


@pytest.fixture(scope="session")
def good_3072(
    tmp_path_factory: pytest.TempPathFactory, city_key: Keys, upy_interpreter: str
) -> release.Bundle:
    """Release NEW signed with the 3072-bit key."""
    return checked_build(city_key, NEW, tmp_path_factory.mktemp("ota-rel-3072"), upy_interpreter)


@pytest.fixture
def records(broker: Mosquitto) -> Iterator[Sub]:
    # (no probe: it needs a topic ending in '#', which would bring the binary
    # chunks; the tests wait for records anyway)
    sub = Sub(broker.port, f"hushlight/v1/{SITE}/sensors/+/levels")
    yield sub
    sub.close()


async def test_a_good_release_is_staged_switched_and_confirmed(
    tmp_path: Path,
    broker: Mosquitto,
    city_key: Keys,
    good_3072: release.Bundle,
    records: Sub,
    on_interpreter: str,
) -> None:
    # where the heap is tightest: 48 kHz, the console open, keygen's key
    server = ReleaseServer(SITE, [good_3072])
    async with server.connect(broker.url):
        s = OtaSensor(
            tmp_path, broker, f"good-{on_interpreter}", city_key, records, server, 48000, True
        )
        s.start()
        try:
            await s.wait_status(lambda st: st.get("fw") == OLD, 30, "the online status")
            first = await s.wait_records_after(-1, 20)
            await server.offer(s.id, NEW)
            st = await s.wait_status(lambda st: st.get("ota") == "confirmed", 60, "ota confirmed")
            assert st["fw"] == NEW and st["ota_version"] == NEW and st["ota_reason"] is None
            assert (
                "ota: step switched" in s.output() and "hushlight sensor: rebooting" in s.output()
            )
            # records measured by the new version arrive, and none is missing
            last = await s.wait_records_after(max(s.seqs()), 20)
        finally:
            s.stop()
    seqs = s.seqs()
    assert seqs[0] <= first and seqs[-1] >= last
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"gaps in seq: {seqs}"
    assert server.progress(s.id) == (good_3072.total, good_3072.total)
    # the new version runs from its slot, on the next boot too
    state = (s.state / "ota.json").read_text()
    assert '"state": "confirmed"' in state and f'"version": "{NEW}"' in state
    assert not (s.state / "ota" / "stage.json").exists()


def _manifest_with(bundle: release.Bundle, **lines: str) -> bytes:
    """The bundle's manifest with the `version` / `min_version` lines replaced."""
    out = []
    for line in bundle.manifest.decode().split("\n"):
        word = line.split(" ", 1)[0]
        out.append(f"{word} {lines[word]}" if word in lines else line)
    return "\n".join(out).encode()


def _changed(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


async def test_bad_releases_are_refused_and_the_sensor_runs_on(
    tmp_path: Path,
    broker: Mosquitto,
    keys: Keys,
    good: release.Bundle,
    records: Sub,
    on_interpreter: str,
) -> None:
    b = good
    data = b.release_bytes()
    size = len(b.manifest)
    second = b.files[1][0]  # a byte of the release's second file changes
    in_second = size + b.files[0][1] + b.files[1][1] // 2
    cut = size + 3000
    cases: list[tuple[str, Release, str]] = [
        (
            "downgrade",
            resigned(b, keys.private, _manifest_with(b, version="0.0.9")),
            f"version 0.0.9 is a downgrade from {OLD}",
        ),
        (
            "same version",
            resigned(b, keys.private, _manifest_with(b, version=OLD)),
            f"version {OLD} is already running",
        ),
        (
            "min_version",
            resigned(b, keys.private, _manifest_with(b, version="0.3.0", min_version="0.2.0")),
            f"version 0.3.0 needs 0.2.0 or later; this sensor runs {OLD}",
        ),
        (
            "another key",
            resigned(b, keys.other_private, b.manifest),
            "the signature does not match this sensor's release key",
        ),
        (
            "a byte of the manifest",
            Release(NEW, b.offer(), _changed(data, size // 2)),
            "the signature does not match this sensor's release key",
        ),
        (
            "a byte of a file",
            Release(NEW, b.offer(), _changed(data, in_second)),
            f"file {second} does not match its sha256 in the manifest",
        ),
        (
            "truncated",
            Release.from_bundle(b, truncate_at=cut),
            f"the release ended at byte {cut} of {b.total}",
        ),
        ("flash full", Release.from_bundle(b), "flash full while staging"),
        ("no key", Release.from_bundle(b), "no release key on this sensor"),
    ]
    events: list[dict[str, Any]] = []
    server = ReleaseServer(SITE, [])
    sensor = f"bad-{on_interpreter}"
    server.on_status.append(lambda who, st: events.append(st) if who == sensor else None)
    async with server.connect(broker.url):
        s = OtaSensor(tmp_path, broker, sensor, keys, records, server)
        s.start()
        try:
            await s.wait_status(lambda st: st.get("fw") == OLD, 30, "the online status")
            seq = await s.wait_records_after(-1, 20)
            for name, rel, reason in cases:
                server.releases = {rel.version: rel}
                if name == "flash full":
                    # the flash takes 20 kB more: less than the release (unix port hook)
                    (s.state / "ota_flash_limit").write_text("20000")
                if name == "no key":
                    (s.state / "release.pub").rename(s.state / "release.pub.away")
                seen = len(events)
                await server.offer(s.id, rel.version)

                def refused(st: dict[str, Any], n: int = seen) -> bool:
                    return any(e.get("ota") == "refused" for e in events[n:])

                await s.wait_status(refused, 30, f"the refusal of {name}")
                st = next(e for e in events[seen:] if e.get("ota") == "refused")
                assert (st["ota_version"], st["ota_reason"]) == (rel.version, reason), name
                assert st["fw"] == OLD, name
                assert s.slot_files() == [], f"{name}: the slot keeps {s.slot_files()}"
                # the sensor runs on: new records arrive
                seq = await s.wait_records_after(seq, 20)
                (s.state / "ota_flash_limit").unlink(missing_ok=True)
                if name == "no key":
                    (s.state / "release.pub.away").rename(s.state / "release.pub")
        finally:
            s.stop()
    assert s.proc is not None and len(s.runs) == 1 and "rebooting" not in s.output()
    seqs = s.seqs()
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"gaps in seq: {seqs}"
