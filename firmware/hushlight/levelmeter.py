"""Sound level meter: A/C weighting, Fast time weighting and statistics, in integers.

`LevelMeter.process_block` runs once per 125 ms block of I2S words.  Its
per-sample loop is a viper function over preallocated int32 arrays that
allocates nothing and keeps every intermediate inside int32 (the ESP32's viper
int).  The structure and the bounds are explained and proved in
`dsp/fixedpoint.py`; `dsp/golden.py` mirrors this code bit for bit.

Wide values (sums of squares, the Fast state) are held in 16-bit limbs, least
significant first, one limb per int32 word.  Levels in dB are computed in
plain Python only when an interval or a summary is taken.

API::

    m = LevelMeter(rate=48000, sensitivity_dbfs=-26.0, calibration_offset_db=0.0,
                   mic=None, peak_threshold_db=70.0)
    m.block_len             # samples per 125 ms block, rate // 8
    m.process_block(buf)    # block_len int32 I2S words; allocates nothing
    m.take_interval()       # (laeq, lafmax, lceq, clipped samples) since the last call
    m.take_summary()        # dict laeq, lafmax, lamin, l10, l50, l90, lceq, peaks
    m.last_block_laeq()     # LAeq of the last block (console `levels`, `cal`)
    m.last_block_clipped()  # clipped samples in the last block
    m.set_calibration(offset_db); m.set_peak_threshold(threshold_db)

Levels are dB with 0.01 dB resolution.  L10/L50/L90 are nearest-rank
percentiles of the 125 ms LAeq values (the last 480 blocks at most); `peaks`
counts upward crossings of the threshold by the A-weighted Fast level.  On
the ESP32 floats are single precision: the integer sums are bit-exact with
the golden model, a dB value may differ from the host in its last digit.

On the unix port a viper `ptr32` load zero-extends (its int is 64 bits), so
values read back from the arrays are sign-fixed; on the ESP32 those branches
are never taken.  Every stored state is below 2**30 in magnitude.
"""

import math
from array import array

import micropython

RATES = (48000, 44100, 32000, 16000)

_LIM = const(0x3FFFFFFF)  # 2**30 - 1 (the largest small int on the ESP32): limbs stay below
_M16 = const(0xFFFF)
_MINUTE = const(480)  # 125 ms values kept for the minute statistics
_NL = const(5)  # limbs of a block sum and of the Fast state
_NW = const(6)  # limbs of an interval or summary sum

# st[] layout
_Y1 = const(0)  # 20.6 Hz section 1 state, input memory
_P0 = const(1)
_Y2 = const(2)
_P1 = const(3)
_YE = const(4)  # equaliser
_PE = const(5)
_U1 = const(6)  # high-frequency biquad input/output memories
_U2 = const(7)
_C1 = const(8)
_C2 = const(9)
_Y3 = const(10)  # 107.7 Hz and 737.9 Hz sections
_Y4 = const(11)
_P3 = const(12)
_ABOVE = const(13)  # Fast level above the peak threshold at the last sub-block
_D = const(16)  # Fast state, 5 limbs
_BA = const(24)  # last block: A sum, C sum, max Fast state (5 limbs each)
_BC = const(29)
_BM = const(34)
_BCLIP = const(39)
_BPEAKS = const(40)
_T = const(42)  # peak threshold on the Fast state, 5 limbs
_IA = const(48)  # interval: A sum, C sum (6 limbs), max Fast (5), clipped, blocks
_IC = const(54)
_IM = const(60)
_ICLIP = const(65)
_IBLK = const(66)
_SA = const(68)  # summary: the same plus peaks
_SC = const(74)
_SM = const(80)
_SPEAKS = const(85)
_SBLK = const(86)
_PA = const(88)  # a block processed in parts: A sum so far (5 limbs), clipped so far
_PCLIP = const(93)
_STATE_LEN = const(96)

# co[]: coeffs.CHAINS[rate] (14 values), then equaliser on/off, k, s, kz, sz


@micropython.viper
def _filter(buf: ptr32, n: int, st: ptr32, co: ptr32):
    k1 = co[0]
    s1 = co[1]
    b0 = co[2]
    if b0 > _LIM:
        b0 = b0 - _LIM - _LIM - _LIM - _LIM - 4
    b1 = co[3]
    if b1 > _LIM:
        b1 = b1 - _LIM - _LIM - _LIM - _LIM - 4
    b2 = co[4]
    if b2 > _LIM:
        b2 = b2 - _LIM - _LIM - _LIM - _LIM - 4
    a1 = co[5]
    if a1 > _LIM:
        a1 = a1 - _LIM - _LIM - _LIM - _LIM - 4
    a2 = co[6]
    if a2 > _LIM:
        a2 = a2 - _LIM - _LIM - _LIM - _LIM - 4
    sh = co[7]
    k2 = co[8]
    s2 = co[9]
    k3 = co[10]
    s3 = co[11]
    sub = co[12]
    kf = co[13]
    eq = co[14]
    ke = co[15]
    se = co[16]
    kz = co[17]
    sz = co[18]
    # states (sign-fixed: see the module docstring)
    y1 = st[_Y1]
    if y1 > _LIM:
        y1 = y1 - _LIM - _LIM - _LIM - _LIM - 4
    p0 = st[_P0]
    if p0 > _LIM:
        p0 = p0 - _LIM - _LIM - _LIM - _LIM - 4
    y2 = st[_Y2]
    if y2 > _LIM:
        y2 = y2 - _LIM - _LIM - _LIM - _LIM - 4
    p1 = st[_P1]
    if p1 > _LIM:
        p1 = p1 - _LIM - _LIM - _LIM - _LIM - 4
    ye = st[_YE]
    if ye > _LIM:
        ye = ye - _LIM - _LIM - _LIM - _LIM - 4
    pe = st[_PE]
    if pe > _LIM:
        pe = pe - _LIM - _LIM - _LIM - _LIM - 4
    u1 = st[_U1]
    if u1 > _LIM:
        u1 = u1 - _LIM - _LIM - _LIM - _LIM - 4
    u2 = st[_U2]
    if u2 > _LIM:
        u2 = u2 - _LIM - _LIM - _LIM - _LIM - 4
    c1 = st[_C1]
    if c1 > _LIM:
        c1 = c1 - _LIM - _LIM - _LIM - _LIM - 4
    c2 = st[_C2]
    if c2 > _LIM:
        c2 = c2 - _LIM - _LIM - _LIM - _LIM - 4
    y3 = st[_Y3]
    if y3 > _LIM:
        y3 = y3 - _LIM - _LIM - _LIM - _LIM - 4
    y4 = st[_Y4]
    if y4 > _LIM:
        y4 = y4 - _LIM - _LIM - _LIM - _LIM - 4
    p3 = st[_P3]
    if p3 > _LIM:
        p3 = p3 - _LIM - _LIM - _LIM - _LIM - 4
    above = st[_ABOVE]
    d0 = st[_D]
    d1 = st[_D + 1]
    d2 = st[_D + 2]
    d3 = st[_D + 3]
    d4 = st[_D + 4]
    t0 = st[_T]
    t1 = st[_T + 1]
    t2 = st[_T + 2]
    t3 = st[_T + 3]
    t4 = st[_T + 4]
    # block accumulators
    ca0 = 0
    ca1 = 0
    ca2 = 0
    ca3 = 0
    ca4 = 0
    ba0 = 0
    ba1 = 0
    ba2 = 0
    ba3 = 0
    ba4 = 0
    m0 = 0
    m1 = 0
    m2 = 0
    m3 = 0
    m4 = 0
    clip = 0
    peaks = 0
    i = 0
    while i < n:
        e0 = 0
        e1 = 0
        e2 = 0
        e3 = 0
        e4 = 0
        end = i + sub
        while i < end:
            x = buf[i] >> 8
            if x >= 0x800000:
                x -= 0x1000000
            if x >= 0x7FFFFF or x <= -0x800000:
                clip += 1
            v = x << 2
            # 20.6 Hz pair: leaky integrators of the difference (zero at z = 1)
            y1 = y1 + ((v - p0) << 3) - ((k1 * (y1 >> 12) + ((k1 * (y1 & 4095)) >> 12)) >> s1)
            p0 = v
            v = y1 >> 3
            y2 = y2 + ((v - p1) << 3) - ((k1 * (y2 >> 12) + ((k1 * (y2 & 4095)) >> 12)) >> s1)
            p1 = v
            v = y2 >> 3
            if eq:
                ye = (
                    ye
                    + ((v - pe) << 3)
                    + ((kz * (pe >> 12) + ((kz * (pe & 4095)) >> 12)) >> sz)
                    - ((ke * (ye >> 12) + ((ke * (ye & 4095)) >> 12)) >> se)
                )
                pe = v
                v = ye >> 3
            # fitted high-frequency biquad, direct form I
            # high parts, then the low parts summed and shifted once
            acc = b0 * (v >> 12) + b1 * (u1 >> 12) + b2 * (u2 >> 12) - a1 * (c1 >> 12)
            acc -= a2 * (c2 >> 12)
            lo = b0 * (v & 4095) + b1 * (u1 & 4095) + b2 * (u2 & 4095) - a1 * (c1 & 4095)
            lo -= a2 * (c2 & 4095)
            acc += lo >> 12
            yc = acc >> sh
            u2 = u1
            u1 = v
            d = yc - c1
            c2 = c1
            c1 = yc
            # C energy
            a = yc
            if a < 0:
                a = -a
            if a < 32768:
                ca0 += a * a
            elif a < 0x800000:
                a = (a + 128) >> 8
                ca1 += a * a
            else:
                a = (a + 32768) >> 16
                ca2 += a * a
            if (ca0 | ca1 | ca2) > _LIM:
                ca1 += ca0 >> 16
                ca0 &= _M16
                ca2 += ca1 >> 16
                ca1 &= _M16
                ca3 += ca2 >> 16
                ca2 &= _M16
                ca4 += ca3 >> 16
                ca3 &= _M16
            # on to A: 107.7 Hz and 737.9 Hz sections
            y3 = y3 + (d << 3) - ((k2 * (y3 >> 12) + ((k2 * (y3 & 4095)) >> 12)) >> s2)
            v = y3 >> 3
            y4 = y4 + ((v - p3) << 3) - ((k3 * (y4 >> 12) + ((k3 * (y4 & 4095)) >> 12)) >> s3)
            p3 = v
            a = y4 >> 3
            if a < 0:
                a = -a
            if a < 32768:
                e0 += a * a
            elif a < 0x800000:
                a = (a + 128) >> 8
                e1 += a * a
            else:
                a = (a + 32768) >> 16
                e2 += a * a
            if (e0 | e1 | e2) > _LIM:
                e1 += e0 >> 16
                e0 &= _M16
                e2 += e1 >> 16
                e1 &= _M16
                e3 += e2 >> 16
                e2 &= _M16
                e4 += e3 >> 16
                e3 &= _M16
            i += 1
        # end of a sub-block: normalise its A sum and add it to the block's
        e1 += e0 >> 16
        e0 &= _M16
        e2 += e1 >> 16
        e1 &= _M16
        e3 += e2 >> 16
        e2 &= _M16
        e4 += e3 >> 16
        e3 &= _M16
        ba0 += e0
        ba1 += e1 + (ba0 >> 16)
        ba0 &= _M16
        ba2 += e2 + (ba1 >> 16)
        ba1 &= _M16
        ba3 += e3 + (ba2 >> 16)
        ba2 &= _M16
        ba4 += e4 + (ba3 >> 16)
        ba3 &= _M16
        # Fast: D = D - (kf * D >> 20) + E
        q = kf * d0  # its low 16 bits fall off the >> 20; only the carry stays
        q = kf * d1 + (q >> 16)
        r1 = q & _M16
        q = kf * d2 + (q >> 16)
        r2 = q & _M16
        q = kf * d3 + (q >> 16)
        r3 = q & _M16
        q = kf * d4 + (q >> 16)
        r4 = q & _M16
        r5 = q >> 16
        q = d0 - ((r1 >> 4) | ((r2 & 15) << 12)) + e0
        d0 = q & _M16
        q = (q >> 16) + d1 - ((r2 >> 4) | ((r3 & 15) << 12)) + e1
        d1 = q & _M16
        q = (q >> 16) + d2 - ((r3 >> 4) | ((r4 & 15) << 12)) + e2
        d2 = q & _M16
        q = (q >> 16) + d3 - ((r4 >> 4) | ((r5 & 15) << 12)) + e3
        d3 = q & _M16
        d4 = (q >> 16) + d4 - (r5 >> 4) + e4
        # block maximum of the Fast state
        gt = 0
        if d4 != m4:
            if d4 > m4:
                gt = 1
        elif d3 != m3:
            if d3 > m3:
                gt = 1
        elif d2 != m2:
            if d2 > m2:
                gt = 1
        elif d1 != m1:
            if d1 > m1:
                gt = 1
        elif d0 > m0:
            gt = 1
        if gt:
            m0 = d0
            m1 = d1
            m2 = d2
            m3 = d3
            m4 = d4
        # peaks: upward crossings of the threshold
        ge = 1
        if d4 != t4:
            if d4 < t4:
                ge = 0
        elif d3 != t3:
            if d3 < t3:
                ge = 0
        elif d2 != t2:
            if d2 < t2:
                ge = 0
        elif d1 != t1:
            if d1 < t1:
                ge = 0
        elif d0 < t0:
            ge = 0
        if ge:
            if not above:
                peaks += 1
            above = 1
        else:
            above = 0
    # normalise the C sum
    ca1 += ca0 >> 16
    ca0 &= _M16
    ca2 += ca1 >> 16
    ca1 &= _M16
    ca3 += ca2 >> 16
    ca2 &= _M16
    ca4 += ca3 >> 16
    ca3 &= _M16
    st[_Y1] = y1
    st[_P0] = p0
    st[_Y2] = y2
    st[_P1] = p1
    st[_YE] = ye
    st[_PE] = pe
    st[_U1] = u1
    st[_U2] = u2
    st[_C1] = c1
    st[_C2] = c2
    st[_Y3] = y3
    st[_Y4] = y4
    st[_P3] = p3
    st[_ABOVE] = above
    st[_D] = d0
    st[_D + 1] = d1
    st[_D + 2] = d2
    st[_D + 3] = d3
    st[_D + 4] = d4
    st[_BA] = ba0
    st[_BA + 1] = ba1
    st[_BA + 2] = ba2
    st[_BA + 3] = ba3
    st[_BA + 4] = ba4
    st[_BC] = ca0
    st[_BC + 1] = ca1
    st[_BC + 2] = ca2
    st[_BC + 3] = ca3
    st[_BC + 4] = ca4
    st[_BM] = m0
    st[_BM + 1] = m1
    st[_BM + 2] = m2
    st[_BM + 3] = m3
    st[_BM + 4] = m4
    st[_BCLIP] = clip
    st[_BPEAKS] = peaks


@micropython.viper
def _wadd(st: ptr32, dst: int, src: int, n: int, nw: int):
    # st[dst:dst+nw] += st[src:src+n], limbs normalised
    c = 0
    j = 0
    while j < nw:
        v = st[dst + j] + c
        if j < n:
            v += st[src + j]
        st[dst + j] = v & _M16
        c = v >> 16
        j += 1


@micropython.viper
def _wmax(st: ptr32, dst: int, src: int):
    # st[dst:dst+5] = max(st[dst:dst+5], st[src:src+5]) as 5-limb numbers
    j = _NL - 1
    while j >= 0:
        a = st[src + j]
        b = st[dst + j]
        if a > b:
            break
        if a < b:
            return
        j -= 1
    if j < 0:
        return
    j = 0
    while j < _NL:
        st[dst + j] = st[src + j]
        j += 1


@micropython.viper
def _block_end(st: ptr32, ring: ptr16):
    # counters and the minute ring; the wide sums are merged by process_block
    # (a viper function passing a pointer to another would box the address,
    # an allocation on the ESP32 where addresses exceed the small-int range)
    st[_ICLIP] = st[_ICLIP] + st[_BCLIP]
    st[_SPEAKS] = st[_SPEAKS] + st[_BPEAKS]
    st[_IBLK] = st[_IBLK] + 1
    # minute statistics: the block's A sum in units of 2**16 (limbs 1..4)
    k = st[_SBLK]
    slot = (k % _MINUTE) * 4
    ring[slot] = st[_BA + 1]
    ring[slot + 1] = st[_BA + 2]
    ring[slot + 2] = st[_BA + 3]
    ring[slot + 3] = st[_BA + 4]
    st[_SBLK] = k + 1


@micropython.viper
def _part_end(st: ptr32, ring: ptr16, last: int):
    # a part of a block (LevelMeter.process_part): its counters now, its A
    # sum added to the block's; what _block_end does once the last part is in
    st[_ICLIP] = st[_ICLIP] + st[_BCLIP]
    st[_SPEAKS] = st[_SPEAKS] + st[_BPEAKS]
    st[_PCLIP] = st[_PCLIP] + st[_BCLIP]
    c = 0
    j = 0
    while j < _NL - 1:
        v = st[_PA + j] + st[_BA + j] + c
        st[_PA + j] = v & _M16
        c = v >> 16
        j += 1
    st[_PA + j] = st[_PA + j] + st[_BA + j] + c  # the top limb holds the rest, as in _filter
    if not last:
        return
    j = 0
    while j < _NL:
        st[_BA + j] = st[_PA + j]
        st[_PA + j] = 0
        j += 1
    st[_BCLIP] = st[_PCLIP]
    st[_PCLIP] = 0
    st[_IBLK] = st[_IBLK] + 1
    k = st[_SBLK]
    slot = (k % _MINUTE) * 4
    ring[slot] = st[_BA + 1]
    ring[slot + 1] = st[_BA + 2]
    ring[slot + 2] = st[_BA + 3]
    ring[slot + 3] = st[_BA + 4]
    st[_SBLK] = k + 1


def check_rate(rate):
    if rate not in RATES:
        raise ValueError(
            "sample rate %r Hz is not supported; use one of 48000, 44100, 32000, 16000" % (rate,)
        )
    return rate


def wide_float(st, off, n):
    """Value of the n-limb wide integer at st[off] as a float (same steps as dsp.golden)."""
    v = 0.0
    j = off + n - 1
    while j >= off:
        v = v * 65536.0 + st[j]
        j -= 1
    return v


def round2(x):
    """Round to 0.01 dB the same way on every port (MicroPython's round() differs)."""
    return math.floor(x * 100.0 + 0.5) / 100.0


def level_db(energy, count, offset):
    """dB of a mean square `energy / count` (units of the chain) plus `offset`."""
    if energy < 1.0:
        energy = 1.0  # below one unit per block: report the quantisation floor
    if count < 1:
        count = 1
    return 10.0 * math.log10(energy / count) + offset


def _sort_down(a, n):
    """Sort a[:n] in place, largest first: a heap sort, so the minute
    statistics need no list (and no heap) of their own."""
    i = n // 2 - 1
    while i >= 0:
        _sift(a, i, n)
        i -= 1
    end = n - 1
    while end > 0:
        # the smallest left goes behind the ones already placed
        v = a[0]
        a[0] = a[end]
        a[end] = v
        _sift(a, 0, end)
        end -= 1


def _sift(a, i, n):
    # restore the min-heap order of a[:n] below position i
    v = a[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and a[c + 1] < a[c]:
            c += 1
        if a[c] >= v:
            break
        a[i] = a[c]
        i = c
    a[i] = v


def percentile_rank(n, exceeded):
    """Index (0-based, descending order) of the level exceeded `exceeded` % of the time."""
    k = (n * exceeded + 99) // 100  # nearest rank: ceil(n * p / 100)
    if k < 1:
        k = 1
    return k - 1


class LevelMeter:
    """A, C and Fast levels of a stream of INMP441 I2S words; see the module docstring."""

    def __init__(
        self,
        rate=48000,
        sensitivity_dbfs=-26.0,
        calibration_offset_db=0.0,
        mic=None,
        peak_threshold_db=70.0,
    ):
        check_rate(rate)
        # the tables of every rate are needed here only: the sensor may drop
        # the module after start-up (hushlight.app)
        from hushlight import coeffs

        chain = coeffs.CHAINS[rate]
        if mic is None:
            eq = (0, 0, 0, 0) + coeffs.GAINS[rate]
            eq_on = 0
        else:
            key = "%d:%s" % (rate, mic)
            if key not in coeffs.EQ:
                raise ValueError(
                    "microphone preset %r is unknown; use one of %s or None"
                    % (mic, ", ".join(coeffs.MICS))
                )
            eq = coeffs.EQ[key]
            eq_on = 1
        self.rate = rate
        self.mic = mic
        self.block_len = rate // 8
        self.sub_len = chain[12]
        self._co = array(
            "i",
            [
                chain[0], chain[1], chain[2], chain[3], chain[4], chain[5], chain[6],
                chain[7], chain[8], chain[9], chain[10], chain[11], chain[12], chain[13],
                eq_on, eq[0], eq[1], eq[2], eq[3], 0,
            ],
        )  # fmt: skip
        self._gain_a = eq[4]
        self._gain_c = eq[5]
        # mean square of the Fast state: D * fast_k / 2**20 / sub_len
        self._fast = chain[13] / (1048576.0 * chain[12])
        self._st = array("i", bytes(4 * _STATE_LEN))
        # limbs 1..4 of each block's A sum, 16 bits each: limbs 1..3 are
        # normalised, and limb 4 stays below 8 (a block sums at most 6000
        # squares below 2**54, under 2**67 in all)
        self._ring = array("H", bytes(8 * _MINUTE))
        # take_summary's sort space (hundredths of a dB fit 16 bits), made
        # while the heap is in one piece
        self._levels = array("h", bytes(2 * _MINUTE))
        self._sensitivity = sensitivity_dbfs
        self._cal = calibration_offset_db
        self._threshold = peak_threshold_db
        self._full_scale = coeffs.FULL_SCALE_DB
        self._offsets()

    def _offsets(self):
        # AES17: a full-scale sine (peak 2**23, samples carrying FRAC_BITS more
        # bits) has mean square 2**(2 * (23 + FRAC_BITS) - 1); it reads 94 - S dB.
        base = (94.0 - self._sensitivity) + self._cal + self._full_scale
        self._off_a = base + self._gain_a
        self._off_c = base + self._gain_c
        self._set_threshold()

    def _set_threshold(self):
        # Fast state at which the A Fast level reaches the threshold, in limbs
        d = 10.0 ** ((self._threshold - self._off_a) / 10.0) / self._fast
        v = int(math.ceil(d)) if d < 1e24 else 1 << 80
        st = self._st
        for j in range(_NL):
            st[_T + j] = (v >> (16 * j)) & 0xFFFF if j < _NL - 1 else v >> (16 * j)

    def set_calibration(self, offset_db):
        self._cal = float(offset_db)
        self._offsets()

    def set_peak_threshold(self, threshold_db):
        self._threshold = float(threshold_db)
        self._set_threshold()

    def process_block(self, buf):
        """Run the first `block_len` int32 I2S words of `buf`; allocates nothing.

        `buf` is an array('i') (or any buffer of int32 words: a bytearray of
        4 * block_len bytes, a memoryview); a longer buffer is fine.
        """
        if len(buf) < self.block_len:
            # the viper loop does not check bounds: refuse before it reads past the end
            raise ValueError(
                "a block needs %d int32 words at %d Hz, got a buffer of %d"
                % (self.block_len, self.rate, len(buf))
            )
        st = self._st
        _filter(buf, self.block_len, st, self._co)
        _wadd(st, _IA, _BA, _NL, _NW)
        _wadd(st, _IC, _BC, _NL, _NW)
        _wadd(st, _SA, _BA, _NL, _NW)
        _wadd(st, _SC, _BC, _NL, _NW)
        _wmax(st, _IM, _BM)
        _wmax(st, _SM, _BM)
        _block_end(st, self._ring)

    def process_part(self, buf, n, last):
        """Run the first `n` words of `buf` as the next part of a block, so a
        buffer of a fraction of a block suffices; `last` (1) ends the block.
        `n` is a multiple of `sub_len`, and the parts of a block add up to
        `block_len`.  The result is bit for bit that of `process_block` on
        the whole block; allocates nothing."""
        if len(buf) < n or n % self.sub_len:
            raise ValueError(
                "a part needs a multiple of %d int32 words at %d Hz, got %d in a buffer of %d"
                % (self.sub_len, self.rate, n, len(buf))
            )
        st = self._st
        _filter(buf, n, st, self._co)
        _wadd(st, _IA, _BA, _NL, _NW)
        _wadd(st, _IC, _BC, _NL, _NW)
        _wadd(st, _SA, _BA, _NL, _NW)
        _wadd(st, _SC, _BC, _NL, _NW)
        _wmax(st, _IM, _BM)
        _wmax(st, _SM, _BM)
        _part_end(st, self._ring, last)

    def last_block_laeq(self):
        return round2(level_db(wide_float(self._st, _BA, _NL), self.block_len, self._off_a))

    def last_block_clipped(self):
        return self._st[_BCLIP]

    def take_interval(self):
        """(laeq, lafmax, lceq, clipped samples) since the last call; resets them."""
        st = self._st
        n = st[_IBLK] * self.block_len
        laeq = level_db(wide_float(st, _IA, _NW), n, self._off_a)
        lceq = level_db(wide_float(st, _IC, _NW), n, self._off_c)
        lafmax = level_db(wide_float(st, _IM, _NL) * self._fast, 1, self._off_a)
        clipped = st[_ICLIP]
        for j in range(_IA, _IBLK + 1):
            st[j] = 0
        return round2(laeq), round2(lafmax), round2(lceq), clipped

    def take_summary(self):
        """Minute statistics of the blocks since the last call (dict); resets them."""
        st = self._st
        blocks = st[_SBLK]
        n = blocks * self.block_len
        ring = self._ring
        kept = blocks if blocks < _MINUTE else _MINUTE
        levels = self._levels
        # each 125 ms level as round2 keeps it, in hundredths of a dB: a small
        # int, where 480 floats would take 7.5 KiB of heap at once (and the
        # order of the rounded levels is the order of the levels)
        for k in range(kept):
            e = wide_float(ring, 4 * k, 4) * 65536.0
            levels[k] = math.floor(level_db(e, self.block_len, self._off_a) * 100.0 + 0.5)
        _sort_down(levels, kept)
        out = {
            "laeq": round2(level_db(wide_float(st, _SA, _NW), n, self._off_a)),
            "lafmax": round2(level_db(wide_float(st, _SM, _NL) * self._fast, 1, self._off_a)),
            "lceq": round2(level_db(wide_float(st, _SC, _NW), n, self._off_c)),
            "peaks": st[_SPEAKS],
        }
        if kept:
            out["lamin"] = levels[kept - 1] / 100.0
            out["l10"] = levels[percentile_rank(kept, 10)] / 100.0
            out["l50"] = levels[percentile_rank(kept, 50)] / 100.0
            out["l90"] = levels[percentile_rank(kept, 90)] / 100.0
        else:
            floor = round2(level_db(0.0, self.block_len, self._off_a))
            out["lamin"] = out["l10"] = out["l50"] = out["l90"] = floor
        for j in range(_SA, _SBLK + 1):
            st[j] = 0
        return out
