"""Steady-state heap of the sensor firmware over an hour of audio, on both interpreters.

For each MicroPython (`device`, the 32-bit ESP32 stand-in, at its sensor heap
`tools.upy.DEVICE_HEAP`; `host`, the x86-64 port, at `tools.upy.HOST_HEAP`)
runs a virtual sensor (`hushlight sensor`: the firmware compiled to .mpy, as
on the device) on the `street` scene as fast as it goes, publishing to a
private Mosquitto, and asks its console as it runs for `status` (free heap
after a collection, records buffered, audio time) and `heap` (where the heap
goes: loaded code, audio buffers, level meter, record rings, MQTT buffers,
console; measured by the firmware as gc.mem_alloc() deltas around its imports
and allocations).  Prints the free heap over time, the spread after warm-up
and the heap table.

    .venv/bin/python bench/sensor_memory.py [--audio-s 3600] [--speed X]
        [--interpreter device|host] [--device-heap 110K] [--host-heap 256K]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tools import upy
from tools.broker import Mosquitto
from tools.console import Console
from tools.upy import REPO_ROOT

WARM_UP_S = 300  # audio seconds before the free heap counts as steady
PARTS = ("boot", "code", "config", "store", "audio", "meter", "mqtt", "console", "other")


def run_one(args: argparse.Namespace, broker: Mosquitto, name: str, heap: str) -> bool:
    """One interpreter; False if the firmware did not get to run."""
    print(f"\n== {name} interpreter, heap {heap}: street scene, {args.audio_s} s of audio ==")
    rows: list[tuple[float, int, int, int, float]] = []
    table: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        err = Path(tmp) / "sensor.err"
        cmd = [sys.executable, "-m", "tools.cli", "sensor", "--id", "bench", "--site", "bench"]
        cmd += ["--broker", broker.url, "--synthetic", "street", "--speed", str(args.speed)]
        cmd += ["--console", "--interpreter", name, "--heap", heap]
        cmd += ["--state-dir", str(state), "--time-origin", "1700000000"]
        with err.open("wb") as e:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=e)
        try:
            port = ""
            while not port:
                time.sleep(0.05)
                for line in err.read_text().splitlines():
                    if line.startswith("console: "):
                        port = line.split(" ", 1)[1]
                if proc.poll() is not None:
                    break
            start = time.monotonic()
            with Console(port, timeout=10) as con:
                heads = ("wall_s", "audio_s", "free_mem", "buffered", "dsp_load")
                print(" ".join(f"{h:>9}" for h in heads))
                while True:
                    if proc.poll() is not None:
                        break
                    [s] = con.command("status")
                    row = (
                        time.monotonic() - start,
                        int(s["audio_s"]),
                        int(s["free_mem"]),
                        int(s["buffered"]),
                        float(s["dsp_load"]),
                    )
                    rows.append(row)
                    print(f"{row[0]:9.1f} {row[1]:9d} {row[2]:9d} {row[3]:9d} {row[4]:9.4f}")
                    if row[1] >= args.audio_s:
                        [table] = con.command("heap")
                        break
                    time.sleep(args.every_s)
        except Exception as exc:  # the firmware died: say how, go on with the next one
            print(f"the sensor stopped: {exc}")
        finally:
            proc.terminate()
            proc.wait(30)
            died = [ln for ln in err.read_text().splitlines() if "Error" in ln or "fatal" in ln]
    if not rows or rows[-1][1] < args.audio_s:
        print("the firmware did not run through: " + ("; ".join(died[-3:]) or "no output"))
        return False
    steady = [r for r in rows if r[1] >= WARM_UP_S] or rows
    free = [r[2] for r in steady]
    wall = rows[-1][0]
    print(
        f"free heap after {WARM_UP_S // 60} min of audio: min {min(free)} B "
        f"({min(free) / 1024:.1f} KiB), max {max(free)} B, "
        f"spread {max(free) - min(free)} B over {len(free)} samples"
    )
    print(f"first {free[0]} B, last {free[-1]} B: drift {free[-1] - free[0]:+d} B")
    print(f"{rows[-1][1]} s of audio in {wall:.0f} s wall: {rows[-1][1] / wall:.0f}x real time")
    print("where the heap goes (bytes; `other`: tasks, records on their way, the interpreter):")
    for part in PARTS:
        if part in table:
            print(f"  {part:>8} {int(table[part]):7d}")
    print(f"  {'free':>8} {int(table['free']):7d}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-s", type=int, default=3600, help="audio time to run (s)")
    parser.add_argument("--every-s", type=float, default=2.0, help="wall time between samples")
    parser.add_argument(
        "--speed", type=float, default=0.0, help="times real time (default 0: as fast as it goes)"
    )
    parser.add_argument(
        "--interpreter", choices=upy.NAMES, action="append", help="only this one (repeatable)"
    )
    parser.add_argument("--device-heap", default=upy.DEVICE_HEAP, help="heap on 'device'")
    parser.add_argument("--host-heap", default=upy.HOST_HEAP, help="heap on 'host'")
    args = parser.parse_args()
    heaps = {"device": args.device_heap, "host": args.host_heap}
    ok = True
    with Mosquitto() as broker:
        for name in args.interpreter or list(upy.NAMES):
            ok = run_one(args, broker, name, heaps[name]) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
