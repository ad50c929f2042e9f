"""Replay raw I2S words through the firmware level meter (MicroPython unix port).

    micropython replay_main.py --rate R --interval S --sensitivity-dbfs X
        --calibration-offset-db Y [--mic NAME] [--summary]

stdin: little-endian int32 I2S words (mono), as the ESP32 I2S peripheral
delivers them for an INMP441.  stdout: one JSON object per interval,
``{"t0": s, "t1": s, "laeq": dB, "lafmax": dB, "lceq": dB}`` with t0/t1 in
seconds from the start of the input.  Intervals hold whole 125 ms blocks; at
the end a partial interval is printed if at least one whole block is left,
and samples short of a block are ignored.  With --summary the minute
statistics of the whole input follow as one more object with "summary": true.
Errors go to stderr with exit status 2.
"""

import sys

from hushlight.levelmeter import LevelMeter


def _fail(msg):
    sys.stderr.write("replay_main: error: %s\n" % msg)
    sys.exit(2)


def _options(argv):
    opts = {
        "--rate": 48000,
        "--interval": 1.0,
        "--sensitivity-dbfs": -26.0,
        "--calibration-offset-db": 0.0,
        "--mic": None,
        "--summary": False,
    }
    i = 0
    while i < len(argv):
        name = argv[i]
        if name == "--summary":
            opts[name] = True
            i += 1
            continue
        if name not in opts or i + 1 >= len(argv):
            _fail("unknown option or missing value at %r; see the module docstring" % name)
        value = argv[i + 1]
        try:
            if name == "--rate":
                opts[name] = int(value)
            elif name == "--mic":
                opts[name] = value
            else:
                opts[name] = float(value)
        except ValueError:
            _fail("%s needs a number, got %r" % (name, value))
        i += 2
    return opts


def _seconds(samples, rate):
    """`samples` at `rate` as seconds to the nanosecond, in decimal text made
    from integers: a float32 holds an hour to 0.2 ms only, and MicroPython
    prints 28800.125 as 28800.124."""
    ns = (samples * 2000000000 + rate) // (2 * rate)  # rounded half up
    return "%d.%09d" % (ns // 1000000000, ns % 1000000000)


def _line(start, end, rate, levels):
    # JSON by hand: the unix port's json.dumps is fine, but this keeps the
    # numbers exactly as the meter rounded them
    return '{"t0": %s, "t1": %s, "laeq": %s, "lafmax": %s, "lceq": %s}' % (
        _seconds(start, rate),
        _seconds(end, rate),
        repr(levels[0]),
        repr(levels[1]),
        repr(levels[2]),
    )


def _read_block(stream, mv, nbytes):
    got = 0
    while got < nbytes:
        n = stream.readinto(mv[got:])
        if not n:
            return False
        got += n
    return True


def main(argv):
    opts = _options(argv)
    try:
        meter = LevelMeter(
            rate=opts["--rate"],
            sensitivity_dbfs=opts["--sensitivity-dbfs"],
            calibration_offset_db=opts["--calibration-offset-db"],
            mic=opts["--mic"],
        )
    except ValueError as exc:
        _fail(str(exc))
    rate = opts["--rate"]
    per = opts["--interval"] * 8
    if per < 1 or per != int(per):
        _fail("interval %r s is not a positive multiple of 0.125 s" % opts["--interval"])
    per = int(per)
    n = meter.block_len
    # the viper loop reads int32 words from any buffer: a bytearray lets a
    # short read from the pipe resume at any byte
    buf = bytearray(4 * n)
    mv = memoryview(buf)
    stream = sys.stdin.buffer
    start = 0  # first sample of the current interval
    blocks = 0
    samples = 0
    while _read_block(stream, mv, 4 * n):
        meter.process_block(buf)
        samples += n
        blocks += 1
        if blocks == per:
            print(_line(start, samples, rate, meter.take_interval()))
            start = samples
            blocks = 0
    if blocks:
        print(_line(start, samples, rate, meter.take_interval()))
    if opts["--summary"]:
        s = meter.take_summary()
        keys = ("laeq", "lafmax", "lamin", "l10", "l50", "l90", "lceq", "peaks")
        print('{"summary": true, ' + ", ".join('"%s": %r' % (k, s[k]) for k in keys) + "}")


if __name__ == "__main__":
    main(sys.argv[1:])
