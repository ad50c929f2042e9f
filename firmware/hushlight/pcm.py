"""File and stream sources: a PCM WAV file and raw PCM from a stream (see
hushlight.sources for the interface).  Only the unix port loads this module.
"""

import struct

import micropython

from hushlight.errors import ConfigError
from hushlight.sources import RATES, check_rate


@micropython.viper
def _pcm_to_words(raw: ptr8, out: ptr32, start: int, n: int, stride: int, width: int):
    # little-endian PCM -> 24 significant bits, left-justified (the INMP441 word)
    i = start
    end = start + n
    p = 0
    while i < end:
        if width == 2:
            out[i] = (raw[p] << 16) | (raw[p + 1] << 24)
        elif width == 3:
            out[i] = (raw[p] << 8) | (raw[p + 1] << 16) | (raw[p + 2] << 24)
        else:
            out[i] = (raw[p + 1] << 8) | (raw[p + 2] << 16) | (raw[p + 3] << 24)
        i += 1
        p += stride


def _read_full(stream, view):
    """Fill memoryview `view` from `stream` (False at end of stream).  A file
    fills it in one call; only a pipe that delivers less makes a slice."""
    need = len(view)
    got = stream.readinto(view)
    while got and got < need:
        n = stream.readinto(view[got:])
        if not n:
            return False
        got += n
    return got == need


class _Views:
    """Memoryviews of the first k bytes of a buffer, made once per length:
    the block loop asks for the same one or two lengths again and again."""

    def __init__(self, buf):
        self.mv = memoryview(buf)
        self.cache = {}

    def get(self, nbytes):
        v = self.cache.get(nbytes)
        if v is None:
            v = self.mv[:nbytes]
            self.cache[nbytes] = v
        return v


class WavSource:
    """A PCM WAV file played as if the INMP441 heard it."""

    live = False

    def __init__(self, path, raw):
        try:
            self._f = open(path, "rb")
        except OSError:
            raise ConfigError("cannot open WAV file %r; give the path of a readable file" % path)
        try:
            self._parse(path)
        except Exception:
            self._f.close()
            raise
        # the shared raw buffer holds a whole number of frames, any channel count
        self._frames = len(raw) // self._align
        if not self._frames:
            self._f.close()
            raise self._refuse(path, "has %d-byte frames, too wide" % self._align)
        self._raw = raw
        self._views = _Views(raw)

    def _refuse(self, path, what):
        return ConfigError(
            "%s %s; give 16-, 24- or 32-bit PCM WAV at 48000, 44100, 32000 or 16000 Hz"
            % (path, what)
        )

    def _parse(self, path):
        f = self._f
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise self._refuse(path, "is not a WAV file")
        fmt = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                raise self._refuse(path, "has no data chunk")
            cid = chunk[:4]
            size = struct.unpack("<I", chunk[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(size + (size & 1))
            elif cid == b"data":
                break
            else:
                f.seek(size + (size & 1), 1)
        if fmt is None or len(fmt) < 16:
            raise self._refuse(path, "has no format chunk before its data")
        tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == 0xFFFE and len(fmt) >= 26:
            tag = struct.unpack("<H", fmt[24:26])[0]
        if tag != 1 or bits not in (16, 24, 32) or channels < 1:
            raise self._refuse(path, "is format %d with %d-bit samples" % (tag, bits))
        if rate not in RATES:
            raise self._refuse(path, "is sampled at %d Hz" % rate)
        self.rate = rate
        self._width = bits // 8
        self._align = align
        self._left = size // align

    def read_block(self, buf, n):
        if self._left < n:
            return False  # a partial last block is not a whole 125 ms: dropped
        done = 0
        while done < n:
            k = min(n - done, self._frames)
            if not _read_full(self._f, self._views.get(k * self._align)):
                return False
            _pcm_to_words(self._raw, buf, done, k, self._align, self._width)
            done += k
        self._left -= n
        return True

    def close(self):
        self._f.close()


class PcmSource:
    """Raw signed 16-bit little-endian mono PCM from a stream, e.g. stdin."""

    live = False

    def __init__(self, stream, rate, raw):
        check_rate(rate)
        self.rate = rate
        self._s = stream
        self._raw = raw
        self._views = _Views(raw)
        self._frames = len(raw) // 2

    def read_block(self, buf, n):
        done = 0
        while done < n:
            k = min(n - done, self._frames)
            if not _read_full(self._s, self._views.get(2 * k)):
                return False
            _pcm_to_words(self._raw, buf, done, k, 2, 2)
            done += k
        return True

    def close(self):
        pass
