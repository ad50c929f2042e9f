"""Steady-state heap of the sensor firmware over an hour of audio.

Runs a virtual sensor (`hushlight sensor`, the firmware in the MicroPython
unix port with the ESP32-sized heap) on the `street` scene as fast as it
goes, publishing to a private Mosquitto, and asks its console for `status`
as it runs: free heap (after a collection), records buffered, audio time.
Prints one row per sample and the spread of the free heap after warm-up.

    .venv/bin/python bench/sensor_memory.py [--audio-s 3600] [--speed X]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.broker import Mosquitto
from tools.console import Console
from tools.upy import HEAP_SIZE, REPO_ROOT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-s", type=int, default=3600, help="audio time to run (s)")
    parser.add_argument("--every-s", type=float, default=2.0, help="wall time between samples")
    parser.add_argument(
        "--speed", type=float, default=0.0, help="times real time (default 0: as fast as it goes)"
    )
    args = parser.parse_args()
    rows: list[tuple[float, int, int, int, float]] = []
    with Mosquitto() as broker, tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        err = Path(tmp) / "sensor.err"
        cmd = [sys.executable, "-m", "tools.cli", "sensor", "--id", "bench", "--site", "bench"]
        cmd += ["--broker", broker.url, "--synthetic", "street", "--speed", str(args.speed)]
        cmd += ["--console"]
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
            start = time.monotonic()
            with Console(port, timeout=10) as con:
                pace = f"at {args.speed:g}x real time" if args.speed else "as fast as possible"
                print(f"heap {HEAP_SIZE}; street scene {pace}")
                heads = ("wall_s", "audio_s", "free_mem", "buffered", "dsp_load")
                print(" ".join(f"{h:>9}" for h in heads))
                while True:
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
                        break
                    time.sleep(args.every_s)
        finally:
            proc.terminate()
            proc.wait(30)
    steady = [r for r in rows if r[1] >= 300] or rows
    free = [r[2] for r in steady]
    wall = rows[-1][0]
    print(
        f"free heap after 5 min of audio: min {min(free)} B, max {max(free)} B, "
        f"spread {max(free) - min(free)} B over {len(free)} samples"
    )
    print(f"first {free[0]} B, last {free[-1]} B: drift {free[-1] - free[0]:+d} B")
    print(f"{rows[-1][1]} s of audio in {wall:.0f} s wall: {rows[-1][1] / wall:.0f}x real time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
