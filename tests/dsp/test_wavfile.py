"""Tests of dsp/wavfile.py against the stdlib `wave` module and hand-built headers."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from dsp import signals, wavfile
from dsp.errors import WavFormatError


def stdlib_codes(path: Path) -> tuple[int, int, np.ndarray]:
    """(rate, channels, int codes of every channel) decoded by the stdlib, independently."""
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
    codes = np.zeros(b.shape[0], dtype=np.int64)
    for i in range(width):
        codes |= b[:, i].astype(np.int64) << (8 * i)
    sign = 1 << (8 * width - 1)
    codes = (codes ^ sign) - sign
    return rate, channels, codes.reshape(-1, channels)


def stdlib_write(path: Path, rate: int, width: int, codes: np.ndarray, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:  # 8-bit WAV is unsigned
            w.writeframes((codes + 128).astype(np.uint8).tobytes())
        else:
            le = codes.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :width]
            w.writeframes(le.tobytes())


def test_pcm_written_here_decodes_with_the_stdlib(tmp_path: Path) -> None:
    x = signals.white_noise(16000, 0.05, -10.0, 3)
    for enc, bits in [("pcm16", 16), ("pcm24", 24), ("pcm32", 32)]:
        path = tmp_path / f"{enc}.wav"
        stereo = np.stack([x, -x], axis=1)
        wavfile.write_wav(path, 16000, stereo, enc)
        rate, channels, codes = stdlib_codes(path)
        full = 2.0 ** (bits - 1)
        expected = np.clip(np.rint(stereo * full), -full, full - 1)
        assert (rate, channels) == (16000, 2)
        assert np.array_equal(codes, expected)


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_stdlib_pcm_reads_as_first_channel_samples_and_i2s_words(
    tmp_path: Path, width: int, channels: int
) -> None:
    rng = np.random.default_rng(width * 10 + channels)
    bits = 8 * width
    codes = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=(1001, channels))
    codes[:2, 0] = [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1]  # both extremes
    path = tmp_path / "in.wav"
    stdlib_write(path, 44100, width, codes, channels)

    wav = wavfile.WavReader(path)
    assert (wav.rate, wav.channels, wav.bits, wav.frames) == (44100, channels, bits, 1001)
    assert wav.encoding == f"pcm{bits}"
    # small blocks on purpose: the block edges must not show
    samples = np.concatenate(list(wav.samples(block_frames=64)))
    assert np.array_equal(samples, codes[:, 0] / 2.0 ** (bits - 1))
    words = np.concatenate(list(wav.i2s_words(block_frames=100)))
    assert words.dtype == np.int32
    # 32-bit keeps the top 24 bits, as a 24-bit converter gives
    expected = (codes[:, 0] >> 8) << 8 if bits == 32 else codes[:, 0] << (32 - bits)
    assert np.array_equal(words, expected)


@pytest.mark.parametrize("extensible", [False, True])
def test_float32_reads_back_and_words_follow_to_i2s_words(tmp_path: Path, extensible: bool) -> None:
    x = np.concatenate([signals.sine(48000, 997.0, 0.02, -3.0), [1.5, -1.5, 0.0]])
    path = tmp_path / "f.wav"
    wavfile.write_wav(
        path, 48000, np.stack([x, np.zeros_like(x)], 1), "float32", extensible=extensible
    )
    rate, samples = wavfile.read(path)
    assert rate == 48000
    assert np.array_equal(samples, x.astype(np.float32).astype(np.float64))
    _, words = wavfile.read_i2s(path)
    assert np.array_equal(words, signals.to_i2s_words(x.astype(np.float32)))
    assert words[-3] == (2**23 - 1) << 8 and words[-2] == -(2**31)  # clipped like the mic


@pytest.mark.parametrize("enc", ["pcm16", "pcm24", "pcm32"])
def test_extensible_pcm_reads_like_plain_pcm(tmp_path: Path, enc: str) -> None:
    x = signals.pink_noise(32000, 0.1, -12.0, 5)
    plain, ext = tmp_path / "plain.wav", tmp_path / "ext.wav"
    wavfile.write_wav(plain, 32000, x, enc)
    wavfile.write_wav(ext, 32000, x, enc, extensible=True)
    assert ext.read_bytes()[20:22] == b"\xfe\xff"
    assert np.array_equal(wavfile.read(plain)[1], wavfile.read(ext)[1])
    assert np.array_equal(wavfile.read_i2s(plain)[1], wavfile.read_i2s(ext)[1])


def _riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _chunk(cid: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return cid + struct.pack("<I", len(payload)) + payload + pad


def _fmt(tag: int, channels: int, rate: int, bits: int) -> bytes:
    align = channels * bits // 8
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits))


def test_other_chunks_with_odd_sizes_are_skipped(tmp_path: Path) -> None:
    codes = np.array([1, -2, 3, 32767, -32768], dtype="<i2")
    path = tmp_path / "list.wav"
    path.write_bytes(
        _riff(
            _chunk(b"LIST", b"INFOabc"),  # odd size: one pad byte follows
            _fmt(1, 1, 16000, 16),
            _chunk(b"fact", b"\x05\x00\x00\x00"),
            _chunk(b"data", codes.tobytes()),
        )
    )
    assert np.array_equal(wavfile.read_i2s(path)[1], codes.astype(np.int32) << 16)


def test_streamed_file_with_unknown_data_size_reads_to_the_end(tmp_path: Path) -> None:
    codes = np.arange(-50, 51, dtype="<i2")
    path = tmp_path / "streamed.wav"
    fmt = _fmt(1, 1, 48000, 16)
    path.write_bytes(
        b"RIFF" + b"\xff" * 4 + b"WAVE" + fmt + b"data" + b"\xff" * 4 + codes.tobytes() + b"\x01"
    )
    # the odd byte at the end is half a frame: dropped
    assert np.array_equal(wavfile.read_i2s(path)[1], codes.astype(np.int32) << 16)


def test_describe_names_the_format(tmp_path: Path) -> None:
    path = tmp_path / "d.wav"
    wavfile.write_wav(path, 48000, np.zeros((48000 * 2, 2)), "pcm24")
    wav = wavfile.WavReader(path)
    assert wav.describe() == "24-bit PCM, 2 channels, 48000 Hz, 2.00 s"
    assert wav.seconds == 2.0


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a phrase the error must contain)."""
    out: dict[str, tuple[Path, str]] = {}

    def add(name: str, data: bytes, phrase: str) -> None:
        p = tmp / f"{name}.wav"
        p.write_bytes(data)
        out[name] = (p, phrase)

    p8 = tmp / "8bit.wav"
    stdlib_write(p8, 48000, 1, np.zeros(100, dtype=np.int64))
    out["8bit"] = (p8, "8-bit PCM at 48000 Hz")
    p22 = tmp / "22050.wav"
    stdlib_write(p22, 22050, 2, np.zeros(100, dtype=np.int64))
    out["22050"] = (p22, "16-bit PCM at 22050 Hz")
    add("float64", _riff(_fmt(3, 1, 48000, 64), _chunk(b"data", bytes(800))), "64-bit float")
    add("alaw", _riff(_fmt(6, 1, 16000, 8), _chunk(b"data", bytes(100))), "A-law")
    add("mp3", _riff(_fmt(0x55, 1, 16000, 16), _chunk(b"data", bytes(100))), "MP3")
    good = tmp / "good.wav"
    wavfile.write_wav(good, 48000, np.zeros(1000), "pcm16")
    add("truncated", good.read_bytes()[:1500], "truncated: its header announces 2000 bytes")
    add("header-only", good.read_bytes()[:30], "truncated format chunk")
    add("text", b"level,time\n45.2,0\n" * 10, "not a WAV file")
    add("empty", b"", "is empty")
    add("no-audio", _riff(_fmt(1, 1, 48000, 16), _chunk(b"data", b"")), "holds no audio")
    add("no-data", _riff(_fmt(1, 1, 48000, 16)), "no data chunk")
    add("data-first", _riff(_chunk(b"data", bytes(4)), _fmt(1, 1, 48000, 16)), "before the format")
    bad_align = struct.pack("<HHIIHH", 1, 2, 48000, 0, 3, 16)
    add("align", _riff(_chunk(b"fmt ", bad_align), _chunk(b"data", bytes(12))), "inconsistent")
    ext = struct.pack("<HHIIHH", 0xFFFE, 1, 48000, 96000, 2, 16) + struct.pack("<HHI", 22, 16, 0)
    add(
        "ext-guid", _riff(_chunk(b"fmt ", ext + bytes(16)), _chunk(b"data", bytes(4))), "sub-format"
    )
    return out


BAD = [
    "8bit",
    "22050",
    "float64",
    "alaw",
    "mp3",
    "truncated",
    "header-only",
    "text",
    "empty",
    "no-audio",
    "no-data",
    "data-first",
    "align",
    "ext-guid",
]


@pytest.mark.parametrize("name", BAD)
def test_unreadable_files_raise_one_sentence_naming_file_and_what_is_supported(
    tmp_path: Path, name: str
) -> None:
    path, phrase = _bad_files(tmp_path)[name]
    with pytest.raises(WavFormatError) as info:
        wavfile.WavReader(path)
    msg = str(info.value)
    assert phrase in msg
    assert msg.startswith(str(path) + " ")
    assert "supported are 16-, 24- or 32-bit PCM or 32-bit float WAV at 48000, 44100" in msg
    assert "\n" not in msg and isinstance(info.value, ValueError)


def test_missing_file_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(WavFormatError, match=r"nope\.wav does not exist"):
        wavfile.WavReader(tmp_path / "nope.wav")
    with pytest.raises(WavFormatError, match="is a directory"):
        wavfile.WavReader(tmp_path)


def test_non_finite_float_sample_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    x = np.zeros(100)
    x[70] = np.inf
    wavfile.write_wav(path, 16000, x, "float32")
    wav = wavfile.WavReader(path)
    # the frame is counted across blocks
    with pytest.raises(WavFormatError, match=r"non-finite float sample \(frame 70\)"):
        list(wav.i2s_words(block_frames=32))
    with pytest.raises(WavFormatError, match=r"non-finite float sample \(frame 70\)"):
        list(wav.samples(block_frames=32))


def test_write_wav_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="encoding 'pcm8'"):
        wavfile.write_wav(tmp_path / "x.wav", 48000, [0.0], "pcm8")
    with pytest.raises(ValueError, match="sample rate 0"):
        wavfile.write_wav(tmp_path / "x.wav", 0, [0.0])
    with pytest.raises(ValueError, match="block size 0 frames"):
        wavfile.write_wav(tmp_path / "x.wav", 48000, [0.0])
        next(wavfile.WavReader(tmp_path / "x.wav").samples(0))
