"""The console's rarer commands: get, cal and selftest, with the calibration
run (`set` and the end of `cal` store settings: hushlight.remote).

hushlight.console loads this module for each such command and drops it
again, so its code and sentences do not stay in the heap of a sensor that
runs for months between two visits of a technician.
"""

import asyncio
import math

# below the INMP441's self-noise (~33 dB(A)) a working microphone cannot go
_MIC_ALIVE_DB = 25.0
_CAL_SPREAD_DB = 0.5


def get(con, args):
    keys = con.app.setting_keys()  # every key of config.json, defaults filled in
    if len(args) != 1 or args[0] not in keys:
        what = "a key" if not args else "unknown key %r" % args[0]
        con.fail("get", "%s; give one of %s" % (what, ", ".join(keys)))
        return
    key = args[0]
    con.send({"cmd": "get", "ok": True, "key": key, "value": con.app.setting(key)})


async def cal(con, args):
    try:
        ref = float(args[0])
        seconds = float(args[1]) if len(args) > 1 else 10.0
        if len(args) > 2:
            raise ValueError
    except (IndexError, ValueError):
        con.fail("cal", "usage: cal REF_DB [SECONDS], e.g. cal 94 10 for a 94 dB calibrator")
        return
    if not 40.0 <= ref <= 140.0:
        con.fail(
            "cal",
            "reference level %r dB is not a calibrator level; give 40..140 (94 or 114 usually)"
            % ref,
        )
        return
    if not 1.0 <= seconds <= 60.0:
        con.fail("cal", "measuring time %r s is out of range; give 1..60 s (10 is usual)" % seconds)
        return
    app = con.app
    run = app.start_calibration(int(seconds * 8))
    shown = 0.0
    while not run.done():
        await asyncio.sleep_ms(100)
        p = run.progress()
        if p - shown >= 0.1 and p < 1.0:
            shown = p
            con.send({"cmd": "cal", "ok": True, "progress": round(p, 2)})
    app.end_calibration()
    if run.clipped:
        con.fail(
            "cal",
            "the signal clipped in %d samples; the calibrator is too loud for the "
            "microphone, use a lower level" % run.clipped,
        )
        return
    spread = run.spread()
    if spread > _CAL_SPREAD_DB:
        con.fail(
            "cal",
            "the level varied by %.2f dB (over %.1f dB allowed), not a steady tone; "
            "seat the calibrator on the microphone and retry" % (spread, _CAL_SPREAD_DB),
        )
        return
    measured = run.mean_db()
    old = app.setting("calibration_offset_db")
    # the new offset is stored by hushlight.remote (console.py), once this
    # module has gone: the two together would crowd a small heap
    return measured, ref, round(old + ref - measured, 2), old


def checks(app):
    """The self-test's checks as (name, ok, detail) tuples: mic, clipping,
    dsp_load, broker, time.  The console's `selftest` reports them all; an
    update on trial (hushlight.otatrial) must pass mic, dsp_load and broker."""
    results = []

    def check(name, ok, detail):
        results.append((name, ok, detail))

    # the last interval's (laeq, lafmax, lceq, clipped) or None
    last = app.capture.last_interval
    load = app.capture.dsp_load()
    connected = app.mqtt.connected()
    synced = app.clock.synced
    if last is None:
        wait = "no interval measured yet; wait %s s and retry" % app.setting("interval_s")
        check("mic", False, wait)
        check("clipping", False, wait)
    else:
        laeq, clipped = last[0], last[3]
        if laeq >= _MIC_ALIVE_DB:
            check("mic", True, "the microphone delivers a signal (LAeq %.1f dB(A))" % laeq)
        else:
            check(
                "mic",
                False,
                "no signal from the microphone (LAeq %.1f dB(A), below its self-noise); "
                "check the I2S wiring and the L/R pin" % laeq,
            )
        if clipped:
            check(
                "clipping",
                False,
                "%d samples clipped in the last interval; the sound is too loud for "
                "the microphone" % clipped,
            )
        else:
            check("clipping", True, "no clipping in the last interval")
    load *= 100
    if load <= 25:
        check("dsp_load", True, "the DSP takes %.1f %% of real time (limit 25 %%)" % load)
    else:
        check(
            "dsp_load",
            False,
            "the DSP takes %.1f %% of real time, over the 25 %% limit; lower sample_rate" % load,
        )
    broker = app.setting("broker")
    if connected:
        check("broker", True, "connected to %s" % broker)
    else:
        check(
            "broker",
            False,
            "not connected to %s; check the network, the broker address and "
            "the credentials" % broker,
        )
    if synced:
        check("time", True, "the clock is synced")
    else:
        check(
            "time",
            False,
            "the clock is not synced yet; check that %s is reachable" % app.setting("ntp_host"),
        )
    return results


def selftest(con):
    all_ok = True
    for name, ok, detail in checks(con.app):
        all_ok = all_ok and ok
        con.send({"cmd": "selftest", "check": name, "ok": ok, "detail": detail})
    con.send({"cmd": "selftest", "ok": all_ok, "done": True})


class CalRun:
    """Collects the 125 ms levels of a calibration measurement.

    The levels are kept in integer hundredths of a dB (the meter's
    resolution): a float32 is 8 micro-dB coarse at 94 dB, so 94.1 - 93.9 came
    out 0.199997 in floats, and an energy sum of 10**9.4-sized terms keeps
    fewer digits still."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.levels = []  # hundredths of a dB
        self.clipped = 0

    def add(self, level_db, clipped):
        if len(self.levels) < self.blocks:
            self.levels.append(int(round(level_db * 100)))
            self.clipped += clipped

    def done(self):
        return len(self.levels) >= self.blocks

    def progress(self):
        return len(self.levels) / self.blocks

    def spread(self):
        return (max(self.levels) - min(self.levels)) / 100

    def mean_db(self):
        # energy mean, as a sound level meter averages, taken relative to the
        # loudest block: each term is at most 1 and the sum keeps its digits
        top = max(self.levels)
        s = 0.0
        for h in self.levels:
            s += 10 ** ((h - top) / 1000)
        return (top + 1000 * math.log10(s / len(self.levels))) / 100
