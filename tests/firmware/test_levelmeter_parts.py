"""`LevelMeter.process_part` (a block measured through a buffer of a part of
it, as the application does to fit a small heap) gives bit for bit what
`process_block` gives on the whole block, and allocates nothing."""

from __future__ import annotations

import json

import pytest

from tools import upy

PARTS = """
import json, micropython
from array import array
from hushlight.levelmeter import LevelMeter
rate = %(rate)d
whole = LevelMeter(rate, peak_threshold_db=60.0)
parted = LevelMeter(rate, peak_threshold_db=60.0)
n = whole.block_len
# the parts hushlight.app uses: the most whole sub-blocks that divide the block
# and fit its 240-word buffer
sub = whole.sub_len
k = n // sub
while k * sub > 240 or (n // sub) %% k:
    k -= 1
part = k * sub
block = array('i', bytes(4 * n))
buf = array('i', bytes(4 * part))
x = 0x2545F491
out = []
for b in range(20):
    # quiet noise, a loud stretch that clips every third block, silence now and then
    loud = b %% 3 == 1
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        v = (x >> 8) - (1 << 23)
        if not loud:
            v >>= 9
        if b %% 5 == 4:
            v = 0
        if loud and i %% 50 == 0:
            v = (1 << 23) - 1
        block[i] = v << 8
    whole.process_block(block)
    k = 0
    while k < n:
        for i in range(part):
            buf[i] = block[k + i]
        k += part
        micropython.heap_lock()
        try:
            parted.process_part(buf, part, k == n)
        finally:
            micropython.heap_unlock()
    row = []
    for m in (whole, parted):
        # the block's A sum (what the minute ring and last_block_laeq read)
        row.append([m.last_block_laeq(), m.last_block_clipped(), list(m._st[24:29])])
    if b %% 8 == 7:
        row.append([whole.take_interval(), parted.take_interval()])
    out.append(row)
out.append([whole.take_summary(), parted.take_summary()])
print(json.dumps([n // part, out]))
"""


@pytest.mark.parametrize("rate", [48000, 44100, 32000, 16000])
def test_a_block_in_parts_measures_as_the_whole_block(rate: int) -> None:
    parts, rows = json.loads(upy.run_code(PARTS % {"rate": rate}).strip().splitlines()[-1])
    assert parts >= 1
    for row in rows[:-1]:
        whole, parted = row[0], row[1]
        assert parted == whole
        if len(row) > 2:
            assert row[2][1] == row[2][0]
    summary_whole, summary_parted = rows[-1]
    assert summary_parted == summary_whole
    # the signal reached what the comparison is about: clipping, peaks, silence
    assert any(row[0][1] > 0 for row in rows[:-1])
    assert summary_whole["peaks"] > 0


def test_a_part_that_is_not_whole_sub_blocks_is_refused_with_a_sentence() -> None:
    code = """
from array import array
from hushlight.levelmeter import LevelMeter
m = LevelMeter(48000)
try:
    m.process_part(array('i', bytes(400)), 50, 1)
except ValueError as e:
    print(e)
"""
    msg = upy.run_code(code).strip()
    assert "multiple of 48" in msg and "got 50" in msg
