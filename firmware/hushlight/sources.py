"""Audio sources behind one interface, and the pacer that plays them in time.

Every source fills the first `n` words of a preallocated `array('i')` with
I2S words (the INMP441's 24-bit sample left-justified in 32 bits, as the
ESP32 I2S peripheral delivers it) with ``await source.read_block(buf, n)``,
which returns False once the audio has ended.  Nothing is allocated per block: raw bytes go
into a buffer made once and a viper loop converts them in place.

- `I2SSource`: `machine.I2S` on the ESP32 (INMP441 defaults; the first
  ~100 ms after start-up are junk and are discarded).
- `WavSource`: a WAV file on the unix port: 16-, 24- or 32-bit PCM, first
  channel, laid out exactly as `dsp.wavfile.WavReader.i2s_words` does, so
  `hushlight replay` sees the same words.
- `PcmSource`: raw signed 16-bit little-endian mono PCM from a stream (stdin).
- `SyntheticSource`: scenes generated with integer noise and precomputed
  tables, cheap enough for the device itself:

  ``quiet``    white noise at about 40 dB(A), a quiet street at night;
  ``street``   ``quiet`` with a 1.5 s burst at about 75 dB(A) every 20 s
               (a shout, a scooter): LAFmax crosses the 70 dB(A) line;
  ``cal94``    a 1 kHz sine at 94 dB SPL, what a sound calibrator plays;
  ``silence``  digital zeros (a dead microphone).

Levels assume the INMP441's -26 dBFS sensitivity (full-scale sine =
120 dB SPL).

`I2SSource` lives in `hushlight.mic` and the file and stream sources in
`hushlight.pcm`, loaded when used (a port never needs both); this module
still offers their names.
"""

import array
import math
import time

import micropython

from hushlight.errors import ConfigError

RATES = (48000, 44100, 32000, 16000)
SCENES = ("quiet", "street", "cal94", "silence")
# the INMP441 needs ~85 ms to settle after its clock starts (datasheet, start-up time)
_SETTLE_MS = 100


def block_len(rate):
    return rate // 8


def check_rate(rate):
    if rate not in RATES:
        raise ConfigError(
            "sample rate %r Hz is not supported; use one of 48000, 44100, 32000, 16000" % (rate,)
        )


@micropython.viper
def _noise(out: ptr32, n: int, state: ptr32, gain: int):
    # xorshift32; every shift-left goes through the 32-bit cell so it wraps the
    # same on the 32-bit ESP32 and the 64-bit host.  Its right shifts must be
    # logical: a 32-bit viper int is signed (the 64-bit host loads the cell
    # zero-extended), so the bits the sign would bring in are masked off.
    i = 0
    while i < n:
        x = state[0]
        state[0] = x ^ (x << 13)
        x = state[0]
        x = x ^ ((x >> 17) & 0x7FFF)
        state[0] = x ^ (x << 5)
        x = state[0]
        s = (((x >> 16) & 0xFFFF) - 32768) * gain
        out[i] = (s >> 8) << 8
        i += 1


@micropython.viper
def _tone(out: ptr32, n: int, table: ptr32, period: int, state: ptr32):
    k = state[0]
    i = 0
    while i < n:
        out[i] = table[k]
        k += 1
        if k == period:
            k = 0
        i += 1
    state[0] = k


@micropython.viper
def _zero(out: ptr32, n: int):
    i = 0
    while i < n:
        out[i] = 0
        i += 1


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


# Full-scale sine = 120 dB SPL; its RMS is 2**31 / sqrt(2).
def _rms_words(db_spl):
    return (2**31 / math.sqrt(2)) * 10 ** ((db_spl - 120.0) / 20.0)


# Uniform 16-bit noise times `gain` has RMS 65536 / sqrt(12) * gain.  White
# noise up to 24 kHz loses about 1.8 dB through the A weighting (mean of
# |A(f)|^2 over the band), so the unweighted level is set that much higher.
_NOISE_RMS = 65536 / math.sqrt(12)
_A_LOSS_DB = 1.8


def _noise_gain(db_a):
    return int(_rms_words(db_a + _A_LOSS_DB) / _NOISE_RMS + 0.5)


class SyntheticSource:
    """A generated scene (see the module docstring); endless."""

    live = False

    def __init__(self, scene, rate, block):
        check_rate(rate)
        if scene not in SCENES:
            raise ConfigError(
                "synthetic scene %r is unknown; use one of %s" % (scene, ", ".join(SCENES))
            )
        self.scene = scene
        self.rate = rate
        self._state = array.array("I", [0x2545F491])
        self._k = array.array("i", [0])
        # samples into the 20 s cycle: the caller may read a block in parts
        self._block = rate // 8
        self._pos = 0
        self._quiet = _noise_gain(40.0)
        self._loud = _noise_gain(75.0)
        # 20 s cycle, burst in its second half for 1.5 s
        self._cycle = 20 * 8
        self._burst_from = 10 * 8
        self._burst_to = self._burst_from + 12
        self._table = None
        if scene == "cal94":
            # one exact period of 1 kHz at this rate (10 cycles at 44.1 kHz)
            period = rate // _gcd(rate, 1000)
            cycles = period * 1000 // rate
            peak = _rms_words(94.0) * math.sqrt(2)
            self._period = period
            self._table = array.array(
                "i",
                [
                    int(peak * math.sin(2 * math.pi * cycles * i / period)) >> 8 << 8
                    for i in range(period)
                ],
            )

    def read_block(self, buf, n):
        scene = self.scene
        if scene == "silence":
            _zero(buf, n)
        elif scene == "cal94":
            _tone(buf, n, self._table, self._period, self._k)
        else:
            gain = self._quiet
            if scene == "street":
                phase = self._pos // self._block
                if self._burst_from <= phase < self._burst_to:
                    gain = self._loud
            _noise(buf, n, self._state, gain)
        self._pos = (self._pos + n) % (self._cycle * self._block)
        return True

    def close(self):
        pass


def __getattr__(name):
    # the sources a port does not use stay unloaded: the microphone on the
    # ESP32 (hushlight.mic), files and streams on the unix port (hushlight.pcm)
    if name == "I2SSource":
        from hushlight.mic import I2SSource

        return I2SSource
    if name in ("WavSource", "PcmSource", "_pcm_to_words"):
        from hushlight import pcm

        return getattr(pcm, name)
    raise AttributeError(name)


def open_source(cfg, block, raw):
    """The source `cfg` (the device config dict) asks for; `raw` is a
    preallocated byte buffer the file and stream sources read through.

    ``source``: ``"i2s"`` (ESP32), ``"wav:PATH"``, ``"stdin"`` or
    ``"synthetic:SCENE"`` (unix port).
    """
    spec = cfg.get("source", "i2s")
    rate = cfg.get("sample_rate", 48000)
    if spec == "i2s":
        from hushlight.mic import I2SSource

        return I2SSource(
            rate,
            block,
            cfg.get("i2s_sck", 32),
            cfg.get("i2s_ws", 25),
            cfg.get("i2s_sd", 33),
            cfg.get("i2s_id", 0),
        )
    if spec.startswith("wav:"):
        from hushlight.pcm import WavSource

        return WavSource(spec[4:], raw)
    if spec == "stdin":
        import sys

        from hushlight.pcm import PcmSource

        stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
        return PcmSource(stream, rate, raw)
    if spec.startswith("synthetic:"):
        return SyntheticSource(spec[10:], rate, block)
    raise ConfigError(
        "audio source %r is unknown; use i2s, wav:PATH, stdin or synthetic:SCENE" % (spec,)
    )


class Pacer:
    """Plays a non-live source at `speed` times real time (0: as fast as possible).

    Small integers only (on the ESP32 a float or a long int is a heap
    object): the speed is kept in thousandths, audio time is counted from an
    anchor that `advance` moves along, so nothing grows with uptime.
    """

    def __init__(self, speed, ticks_ms, ticks_diff):
        self.milli = int(speed * 1000 + 0.5)
        self._ticks_ms = ticks_ms
        self._diff = ticks_diff
        self._start = ticks_ms()
        self._rem = 0

    def due_in_ms(self, audio_ms):
        """ms to wait until `audio_ms` after the anchor has been played (negative: late)."""
        if self.milli <= 0:
            return 0
        return audio_ms * 1000 // self.milli - self._diff(self._ticks_ms(), self._start)

    def advance(self, audio_ms):
        """Move the anchor `audio_ms` of audio on (in wall time: divided by the speed)."""
        if self.milli <= 0:
            return
        self._rem += audio_ms * 1000
        step = self._rem // self.milli
        self._rem -= step * self.milli
        self._start = time.ticks_add(self._start, step)
