"""Read and write the WAV recordings the level meter replays.

Readable: RIFF/WAVE with PCM (format 1), IEEE float (format 3) or
WAVE_FORMAT_EXTENSIBLE (0xFFFE) wrapping either; 16-, 24- or 32-bit PCM or
32-bit float; any number of channels (the first one is used, as a sensor has
one microphone); at the rates the firmware supports (48000, 44100, 32000,
16000 Hz). A data size left at 0xFFFFFFFF (recorders that stream to a pipe)
means "to the end of the file"; a half frame at the end is dropped. A
non-finite float sample is a broken file. Everything else raises
`WavFormatError` with one sentence naming the file, what it holds and what is
supported. The stdlib `wave` module reads
PCM only, hence the small RIFF parser here.

Samples come out in blocks so that an hour-long recording never sits in memory
as float64 at once:

- `WavReader.samples()` yields float64 blocks with full scale 1
  (16-bit PCM / 2**15, 24-bit / 2**23, 32-bit / 2**31, float as stored);
- `WavReader.i2s_words()` yields int32 blocks laid out as the ESP32 I2S
  peripheral delivers a 24-bit INMP441 word (see `dsp.signals`): 16-bit
  ``s << 16``, 24-bit ``s << 8``, 32-bit PCM keeps its top 24 bits
  (``s & ~0xFF``, what a 24-bit converter would have given), float goes
  through `dsp.signals.to_i2s_words` (rounded and clipped to 24 bits).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from dsp.errors import WavFormatError
from dsp.signals import to_i2s_words

__all__ = [
    "BLOCK_FRAMES",
    "ENCODINGS",
    "SUPPORTED_RATES",
    "WavReader",
    "read",
    "read_i2s",
    "write_wav",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int32]

SUPPORTED_RATES: Final = (48000, 44100, 32000, 16000)
# 6000 frames = 125 ms at 48 kHz: a few hundred KiB of float64 per block at most
BLOCK_FRAMES: Final = 6000

_PCM: Final = 0x0001
_FLOAT: Final = 0x0003
_ALAW: Final = 0x0006
_MULAW: Final = 0x0007
_EXTENSIBLE: Final = 0xFFFE
# data size left at its maximum by recorders that stream to a pipe
_UNKNOWN_SIZE: Final = 0xFFFFFFFF
# KSDATAFORMAT_SUBTYPE_*: the format code followed by this fixed GUID tail
_GUID_TAIL: Final = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
_TAG_NAMES: Final = {_ALAW: "A-law", _MULAW: "mu-law", 0x0002: "ADPCM", 0x0055: "MP3"}

_SUPPORTED: Final = (
    "supported are 16-, 24- or 32-bit PCM or 32-bit float WAV at 48000, 44100, 32000 or 16000 Hz"
)

# encoding name -> (format tag, bits per sample)
ENCODINGS: Final = {
    "pcm16": (_PCM, 16),
    "pcm24": (_PCM, 24),
    "pcm32": (_PCM, 32),
    "float32": (_FLOAT, 32),
}


def _refuse(path: Path, found: str) -> WavFormatError:
    return WavFormatError(f"{path} {found}; {_SUPPORTED}")


class WavReader:
    """The header of a WAV file, checked, and block-wise access to its first channel.

    Opening reads only the header; `samples()` and `i2s_words()` re-open the
    file and read it block by block.
    """

    path: Path
    rate: int
    channels: int
    bits: int
    encoding: str  # one of ENCODINGS
    frames: int

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self._parse(f, size)
        except FileNotFoundError:
            raise WavFormatError(
                f"{self.path} does not exist; give the path of a WAV file"
            ) from None
        except IsADirectoryError:
            raise WavFormatError(
                f"{self.path} is a directory; give the path of a WAV file"
            ) from None
        except PermissionError:
            raise WavFormatError(
                f"{self.path} cannot be read (permission denied); check its permissions"
            ) from None

    @property
    def seconds(self) -> float:
        return self.frames / self.rate

    def describe(self) -> str:
        """E.g. "24-bit PCM, 2 channels, 48000 Hz, 12.50 s"."""
        kind = "float" if self.encoding == "float32" else "PCM"
        chans = "1 channel" if self.channels == 1 else f"{self.channels} channels"
        return f"{self.bits}-bit {kind}, {chans}, {self.rate} Hz, {self.seconds:.2f} s"

    def _parse(self, f: BinaryIO, size: int) -> None:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            what = "is empty" if size == 0 else "is not a WAV file (no RIFF/WAVE header)"
            raise _refuse(self.path, what)
        fmt: bytes | None = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                if fmt is None:
                    raise _refuse(self.path, "is truncated before its format chunk")
                raise _refuse(self.path, "has no data chunk (truncated or not a recording)")
            cid, csize = struct.unpack("<4sI", chunk)
            if cid == b"fmt ":
                fmt = f.read(csize)
                if len(fmt) < csize or csize < 16:
                    raise _refuse(self.path, "has a truncated format chunk")
                self._read_format(fmt)
                if csize % 2:
                    f.seek(1, os.SEEK_CUR)
            elif cid == b"data":
                if fmt is None:
                    raise _refuse(self.path, "has its data chunk before the format chunk")
                break
            else:
                # LIST, fact, cue and the like: skipped, with the RIFF pad byte
                f.seek(csize + (csize % 2), os.SEEK_CUR)
        self._data_offset = f.tell()
        available = size - self._data_offset
        if csize == _UNKNOWN_SIZE:
            csize = available  # written by a recorder that could not seek back: to the end
        if csize > available:
            raise _refuse(
                self.path,
                f"is truncated: its header announces {csize} bytes of audio but only "
                f"{max(available, 0)} follow",
            )
        align = self.channels * self.bits // 8
        self._block_align = align
        self.frames = csize // align
        if self.frames == 0:
            raise _refuse(self.path, f"holds no audio ({self.describe()})")

    def _read_format(self, fmt: bytes) -> None:
        tag, channels, rate, _byte_rate, align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _EXTENSIBLE:
            if len(fmt) < 40:
                raise _refuse(self.path, "has a truncated WAVE_FORMAT_EXTENSIBLE format chunk")
            sub = fmt[24:40]
            if sub[2:] != _GUID_TAIL:
                raise _refuse(self.path, "uses an unknown WAVE_FORMAT_EXTENSIBLE sub-format")
            tag = struct.unpack("<H", sub[:2])[0]
        if tag not in (_PCM, _FLOAT):
            name = _TAG_NAMES.get(tag, f"format code 0x{tag:04x}")
            raise _refuse(self.path, f"is {name} encoded")
        kind = "PCM" if tag == _PCM else "float"
        encoding = f"pcm{bits}" if tag == _PCM else f"float{bits}"
        if encoding not in ENCODINGS:
            raise _refuse(self.path, f"is {bits}-bit {kind} at {rate} Hz")
        if rate not in SUPPORTED_RATES:
            raise _refuse(self.path, f"is {bits}-bit {kind} at {rate} Hz")
        if channels < 1 or align != channels * bits // 8:
            raise _refuse(
                self.path,
                f"has an inconsistent format chunk ({channels} channels of {bits} bits "
                f"in {align}-byte frames)",
            )
        self.rate, self.channels, self.bits, self.encoding = rate, channels, bits, encoding

    def _raw_blocks(self, block_frames: int) -> Iterator[npt.NDArray[np.uint8]]:
        """First-channel bytes, shape (frames, bytes per sample), block by block."""
        if block_frames < 1:
            raise ValueError(f"block size {block_frames} frames is not valid; give at least 1")
        width = self.bits // 8
        with open(self.path, "rb") as f:
            f.seek(self._data_offset)
            left = self.frames
            while left:
                n = min(left, block_frames)
                raw = f.read(n * self._block_align)
                if len(raw) < n * self._block_align:
                    raise _refuse(self.path, "was truncated while it was being read")
                frames = np.frombuffer(raw, dtype=np.uint8).reshape(n, self._block_align)
                yield frames[:, :width]
                left -= n

    def _ints(self, block: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
        """Little-endian PCM bytes -> int32, left-justified in 32 bits (s << (32 - bits))."""
        width = self.bits // 8
        words = np.zeros((block.shape[0], 4), dtype=np.uint8)
        words[:, 4 - width :] = block
        return words.view("<i4").reshape(-1)

    def _floats(self, block: npt.NDArray[np.uint8], done: int) -> FloatArray:
        """A float32 block as float64; NaN or infinity is a broken file, not a level."""
        x = np.ascontiguousarray(block).view("<f4").reshape(-1).astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            frame = done + int(bad[0])
            raise WavFormatError(
                f"{self.path} holds a non-finite float sample (frame {frame}); "
                "give a recording of finite samples"
            )
        return x

    def samples(self, block_frames: int = BLOCK_FRAMES) -> Iterator[FloatArray]:
        """Float64 blocks of the first channel, full scale 1."""
        done = 0
        for block in self._raw_blocks(block_frames):
            if self.encoding == "float32":
                yield self._floats(block, done)
            else:
                # left-justified, so every PCM width scales by the same 2**31
                yield self._ints(block).astype(np.float64) / 2.0**31
            done += block.shape[0]

    def i2s_words(self, block_frames: int = BLOCK_FRAMES) -> Iterator[IntArray]:
        """int32 blocks of the first channel as the I2S peripheral delivers an INMP441 word."""
        done = 0
        for block in self._raw_blocks(block_frames):
            if self.encoding == "float32":
                yield to_i2s_words(self._floats(block, done))
            else:
                # 16- and 24-bit land in the top bits as is; 32-bit loses the bits
                # below the 24 a MEMS converter delivers
                yield self._ints(block) & np.int32(~0xFF)
            done += block.shape[0]


def read(path: str | os.PathLike[str]) -> tuple[int, FloatArray]:
    """Whole first channel as float64 (full scale 1), with the rate: for short files."""
    wav = WavReader(path)
    return wav.rate, np.concatenate(list(wav.samples()))


def read_i2s(path: str | os.PathLike[str]) -> tuple[int, IntArray]:
    """Whole first channel as I2S int32 words, with the rate: for short files."""
    wav = WavReader(path)
    return wav.rate, np.concatenate(list(wav.i2s_words()))


def write_wav(
    path: str | os.PathLike[str],
    rate: int,
    samples: npt.ArrayLike,
    encoding: str = "pcm16",
    *,
    extensible: bool = False,
) -> None:
    """Write float samples (full scale 1; shape (frames,) or (frames, channels)).

    PCM rounds to the nearest code and clips to the code range; float32 is
    written as is. `extensible` writes a WAVE_FORMAT_EXTENSIBLE header, as
    many recorders do for 24-bit and multi-channel files.
    """
    if encoding not in ENCODINGS:
        raise ValueError(
            f"encoding {encoding!r} is not supported; give one of {', '.join(ENCODINGS)}"
        )
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise ValueError(f"sample rate {rate!r} is not valid; give a positive integer in Hz")
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(
            f"samples of shape {x.shape} are not valid; give (frames,) or (frames, channels)"
        )
    tag, bits = ENCODINGS[encoding]
    frames, channels = x.shape
    if tag == _FLOAT:
        data = x.astype("<f4").tobytes()
    else:
        full = float(1 << (bits - 1))
        codes = np.clip(np.rint(x * full), -full, full - 1).astype("<i4")
        # little-endian int32 holds the code in its low `bits`: keep those bytes
        data = codes.view(np.uint8).reshape(frames, channels, 4)[:, :, : bits // 8].tobytes()
    align = channels * bits // 8
    common = struct.pack("<HIIHH", channels, rate, rate * align, align, bits)
    if extensible:
        sub = struct.pack("<H", tag) + _GUID_TAIL
        fmt = struct.pack("<H", _EXTENSIBLE) + common + struct.pack("<HHI", 22, bits, 0) + sub
    else:
        fmt = struct.pack("<H", tag) + common
    pad = b"\x00" if len(data) % 2 else b""
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data + pad
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)
