"""firmware/hushlight/app.py in the MicroPython unix port: the capture loop
allocates nothing per block (heap locked while it runs), for each host source."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from dsp import signals
from dsp.wavfile import write_wav
from tests.firmware.upyrun import mp
from tools import upy
from tools.broker import Mosquitto
from tools.sensor import install_firmware

# Blocks 3..40 run with the heap locked: any allocation in the capture path
# (source, meter, pacer, bookkeeping) raises MemoryError there.
LOCKED_CAPTURE = """
import asyncio, json, micropython
from hushlight import app
a = app.App().capture
src = a.source
orig = src.read_block
calls = [0]
class Guard:
    live = False
    rate = src.rate
    def read_block(self, buf, n):
        calls[0] += 1
        if calls[0] == 3:
            micropython.heap_lock()
        if calls[0] == 40:
            micropython.heap_unlock()
            return False
        return orig(buf, n)
    def close(self):
        pass
a.source = Guard()
# the once-an-interval work allocates by design (a record is a new object)
def skip4(a, b, c, d):
    pass
def skip3(a, b, c):
    pass
a._interval = skip4
a._summary = skip3
asyncio.run(a.run())
print(json.dumps([calls[0], a.audio_blocks]))
"""


def write_config(folder: Path, **values: object) -> None:
    cfg: dict[str, object] = {"id": "t", "site": "t", "broker": "mqtt://127.0.0.1:9"}
    cfg["console"] = "off"
    cfg.update(values)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("source", ["synthetic:street", "wav", "synthetic:cal94"])
def test_capture_allocates_nothing_per_block(tmp_path: Path, source: str) -> None:
    if source == "wav":
        wav = tmp_path / "a.wav"
        write_wav(wav, 44100, signals.pink_noise(44100, 6.0, -30.0, seed=2), "pcm24")
        source = f"wav:{wav}"
    write_config(tmp_path, source=source, speed=0)
    calls, blocks = mp(LOCKED_CAPTURE, tmp_path, compiled=True)
    assert (calls, blocks) == (40, 39)


def test_a_bad_config_stops_start_up_with_one_sentence(tmp_path: Path) -> None:
    write_config(tmp_path, source="synthetic:quiet", interval_s=0.3)
    proc = subprocess.run(
        upy.command("-c", "import main"),
        cwd=tmp_path,
        env=upy.firmware_env(install_firmware(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "interval_s" in lines[0] and "0.3" in lines[0]


# The PUBACK of a record is handled before publish() hands back its packet
# id: the reader runs while publish yields, and a broker on the same host can
# answer within the same tick.  Here the publisher is made to see it that way
# every time: the id comes back only once its PUBACK has been handled.
PUBACK_FIRST = """
import asyncio, json
from hushlight import app
a = app.App()
orig = a.mqtt.publish
async def late_id(topic, payload, qos=0, retain=False):
    pid = await orig(topic, payload, qos, retain)
    while qos and pid in a.mqtt._unacked:
        await asyncio.sleep_ms(1)
    return pid
a.mqtt.publish = late_id
asyncio.run(a.run())
print(json.dumps([a.store.buffered(), a.store.next[0], a.mqtt.stats["acked"]]))
"""


def test_a_puback_that_outruns_publish_still_acknowledges_its_record(
    tmp_path: Path, broker: Mosquitto
) -> None:
    wav = tmp_path / "a.wav"
    write_wav(wav, 16000, signals.pink_noise(16000, 4.0, -30.0, seed=3), "pcm16")
    write_config(
        tmp_path, source=f"wav:{wav}", speed=0, broker=broker.url, keepalive_s=5, interval_s=1
    )
    buffered, made, acked = mp(PUBACK_FIRST, tmp_path, timeout=90, compiled=True)
    assert made == 4  # one record a second of audio
    # every record acknowledged, none left in the store: the sensor stopped
    # because all was delivered, not because it gave up waiting
    assert buffered == 0
    assert acked >= made


def test_stdin_end_with_the_broker_gone_persists_the_backlog_and_exits_0(tmp_path: Path) -> None:
    # nothing listens on the broker's port: no record can be acknowledged
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_config(
        tmp_path,
        source="stdin",
        sample_rate=16000,
        speed=0,
        broker=f"mqtt://127.0.0.1:{port}",
        keepalive_s=5,
        interval_s=1,
    )
    pcm = (signals.pink_noise(16000, 3.0, -30.0, seed=4) * 32767).round().astype("<i2")
    proc = subprocess.run(
        upy.command("-c", "import main"),
        cwd=tmp_path,
        env=upy.firmware_env(install_firmware(tmp_path)),
        input=pcm.tobytes(),
        capture_output=True,
        timeout=90,
        check=False,
    )
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    assert "3 records not acknowledged; kept for the next start" in out
    # the three records are on flash, readable by the next start
    seqs = mp(
        "import json\nfrom hushlight.store import Store, LEVELS\n"
        "s = Store('.', 2400)\nq = []\nr = s.next_unsent(LEVELS)\n"
        "while r is not None:\n    q.append(r[0])\n    r = s.next_unsent(LEVELS)\n"
        "print(json.dumps(q))",
        tmp_path,
    )
    assert seqs == [0, 1, 2]


def test_a_heap_lock_left_by_an_interrupt_is_released_for_the_stop(tmp_path: Path) -> None:
    # The stop path after an interrupt must be able to allocate (log, flush
    # the store) even when the interrupt left the heap locked; and a heap
    # that was never locked is left as it is.
    code = """
import json, micropython
from hushlight.app import release_heap_lock
micropython.heap_lock()
micropython.heap_lock()
try:
    bytearray(16)
    locked = False
except MemoryError:
    locked = True
release_heap_lock()
after = bytearray(64)
release_heap_lock()
micropython.heap_lock()
depth = micropython.heap_unlock()
print(json.dumps([locked, len(after), depth]))
"""
    locked, size, depth = mp(code, tmp_path, compiled=True)
    assert locked is True
    assert size == 64
    assert depth == 0  # heap_unlock() returns the depth left: no lock left over, none undone twice
