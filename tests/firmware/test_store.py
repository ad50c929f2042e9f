"""firmware/hushlight/store.py in the MicroPython unix port: seq across
reboots, spill to flash, torn records, drop policy, acknowledgements."""

from __future__ import annotations

import json
from pathlib import Path

from tests.firmware.upyrun import mp

PRELUDE = """
import json
from hushlight import store
from hushlight.store import LEVELS, SUMMARY, Store
def small():
    # RAM rings of ~20 test records each, so that tests spill early
    return (bytearray(600), bytearray(600))
def fill(s, kind, n):
    out = []
    for i in range(n):
        q = s.next_seq(kind)
        s.add(kind, q, b'{"seq":%d,"k":%d}' % (q, kind))
        out.append(q)
    return out
def fill_span(s, kind, n):
    # [first seq, last seq, strictly increasing], without keeping them all
    first = last = s.next_seq(kind)
    s.add(kind, first, b'{}')
    up = True
    for i in range(n - 1):
        q = s.next_seq(kind)
        s.add(kind, q, b'{}')
        up = up and q > last
        last = q
    return [first, last, up]
def drain(s, kind):
    out = []
    while True:
        r = s.next_unsent(kind)
        if r is None:
            return out
        out.append([r[0], r[1].decode()])
"""


def test_seq_continues_exactly_after_a_clean_stop(tmp_path: Path) -> None:
    first = mp(
        PRELUDE + "s = Store('.')\nprint(json.dumps(fill(s, LEVELS, 5)))\ns.flush()", tmp_path
    )
    second = mp(PRELUDE + "s = Store('.')\nprint(json.dumps(fill(s, LEVELS, 3)))", tmp_path)
    assert first == [0, 1, 2, 3, 4]
    assert second == [5, 6, 7]


def test_seq_skips_ahead_after_a_crash_and_never_repeats(tmp_path: Path) -> None:
    # no flush: the process dies with the counter somewhere inside its reserved block
    spans = [
        mp(PRELUDE + "s = Store('.')\nprint(json.dumps(fill_span(s, LEVELS, 1500)))", tmp_path)
        for _ in range(3)
    ]
    assert all(up for _, _, up in spans)
    # each boot starts past everything the one before it used
    assert spans[1][0] > spans[0][1] and spans[2][0] > spans[1][1]
    seen = [spans[-1][1]]
    # one small file write per reserved block: the mark on flash is ahead of every seq used
    mark = json.loads((tmp_path / "seq.json").read_text())["levels"]
    assert mark > seen[-1]
    assert mark - seen[-1] <= 1000 + 1


def test_a_start_up_cut_short_before_its_first_record_skips_no_seq(tmp_path: Path) -> None:
    # a clean run, then boots that die before they take a seq (a reset while
    # connecting, a boot loop): the next record follows the last one with no gap
    first = mp(
        PRELUDE + "s = Store('.')\nprint(json.dumps(fill(s, LEVELS, 3)))\ns.flush()", tmp_path
    )
    for _ in range(3):
        mp(PRELUDE + "s = Store('.')\nprint('[]')", tmp_path)
    assert json.loads((tmp_path / "seq.json").read_text())["levels"] == 3
    after = mp(PRELUDE + "s = Store('.')\nprint(json.dumps(fill(s, LEVELS, 2)))", tmp_path)
    assert first + after == [0, 1, 2, 3, 4]
    # and the first seq taken reserved a block on flash, for both kinds, before it was used
    mark = json.loads((tmp_path / "seq.json").read_text())
    assert mark["levels"] > 4 and mark["summary"] > 0, mark


def test_levels_and_summary_count_separately(tmp_path: Path) -> None:
    got = mp(
        PRELUDE + "s = Store('.')\nprint(json.dumps([fill(s, LEVELS, 3), fill(s, SUMMARY, 2)]))",
        tmp_path,
    )
    assert got == [[0, 1, 2], [0, 1]]


def test_spilled_backlog_survives_a_reboot_in_order(tmp_path: Path) -> None:
    sent = mp(
        PRELUDE
        + "s = Store('.', rings=small())\nfill(s, LEVELS, 150)\nfill(s, SUMMARY, 3)\n"
        + "print(json.dumps(s.buffered()))\ns.flush()",
        tmp_path,
    )
    assert sent == 153
    assert list((tmp_path / "spill").iterdir())
    after = mp(
        PRELUDE + "s = Store('.')\nprint(json.dumps([drain(s, LEVELS), drain(s, SUMMARY)]))",
        tmp_path,
    )
    levels, summary = after
    assert [r[0] for r in levels] == list(range(150))
    assert all(json.loads(r[1]) == {"seq": r[0], "k": 0} for r in levels)
    assert [r[0] for r in summary] == [0, 1, 2]


def test_a_torn_record_is_skipped_and_the_rest_kept(tmp_path: Path) -> None:
    mp(PRELUDE + "s = Store('.', rings=small())\nfill(s, LEVELS, 100)\ns.flush()", tmp_path)
    segs = sorted((tmp_path / "spill").iterdir())
    assert len(segs) >= 2
    last = segs[-1]
    data = last.read_bytes()
    last.write_bytes(data[:-5])  # power lost in the middle of the last record
    # and a record whose payload changed on flash (a bad page)
    first = segs[0]
    raw = bytearray(first.read_bytes())
    raw[-3] ^= 0x40
    first.write_bytes(bytes(raw))
    got = mp(PRELUDE + "s = Store('.')\nprint(json.dumps([drain(s, LEVELS), s.torn]))", tmp_path)
    seqs = [r[0] for r in got[0]]
    assert got[1] == 2
    # every record before the damage in each segment survives, in order, no duplicates
    assert seqs == sorted(set(seqs))
    assert len(seqs) == 100 - 2
    assert 99 not in seqs


def test_when_full_the_oldest_levels_go_first_and_are_counted(tmp_path: Path) -> None:
    capacity, n_levels, n_summary = 200, 400, 30
    got = mp(
        PRELUDE
        + f"s = Store('.', capacity={capacity}, rings=small())\n"
        + f"fill(s, SUMMARY, {n_summary})\nfill(s, LEVELS, {n_levels})\n"
        + "print(json.dumps([s.dropped, s.buffered(), drain(s, LEVELS), drain(s, SUMMARY)]))",
        tmp_path,
    )
    dropped, buffered, levels, summary = got
    assert buffered <= capacity
    assert dropped + buffered == n_levels + n_summary
    # summaries are all kept while level records remain to drop
    assert [r[0] for r in summary] == list(range(n_summary))
    seqs = [r[0] for r in levels]
    # what is left is the newest level records, contiguous up to the last
    assert seqs == list(range(n_levels - len(seqs), n_levels))


def test_acknowledged_records_leave_and_their_segments_are_deleted(tmp_path: Path) -> None:
    got = mp(
        PRELUDE
        + "s = Store('.', rings=small())\nfill(s, LEVELS, 100)\nsent = drain(s, LEVELS)\n"
        + "for r in reversed(sent[:70]):\n    s.ack(LEVELS, r[0])\n"
        + "a = s.buffered()\n"
        + "for r in sent[70:]:\n    s.ack(LEVELS, r[0])\n    s.ack(LEVELS, r[0])\n"
        + "import os\nprint(json.dumps([a, s.buffered(), os.listdir('spill')]))",
        tmp_path,
    )
    assert got == [30, 0, []]


def test_a_new_connection_resends_what_is_not_acknowledged(tmp_path: Path) -> None:
    got = mp(
        PRELUDE
        + "s = Store('.', rings=small())\nfill(s, LEVELS, 20)\nsent = drain(s, LEVELS)\n"
        + "for r in sent[:5]:\n    s.ack(LEVELS, r[0])\ns.ack(LEVELS, 9)\n"
        + "s.rewind()\nprint(json.dumps([r[0] for r in drain(s, LEVELS)]))",
        tmp_path,
    )
    assert got == [x for x in range(5, 20) if x != 9]


def test_steady_state_acks_keep_everything_in_ram_and_intact(tmp_path: Path) -> None:
    # connected: each record is sent and acknowledged a little later; the
    # ring wraps (compacts) many times, nothing goes to flash, nothing is lost
    got = mp(
        PRELUDE
        + "s = Store('.', rings=small())\nout = []\nlag = []\n"
        + "for i in range(500):\n"
        + "    q = s.next_seq(LEVELS)\n"
        + "    p = b'{\"seq\":%d,\"pad\":\"' % q + b'x' * (i % 37) + b'\"}'\n"
        + "    s.add(LEVELS, q, p)\n"
        + "    r = s.next_unsent(LEVELS)\n"
        + "    out.append(r[0] == q and r[1] == p)\n"
        + "    lag.append(r[0])\n"
        + "    if len(lag) > 5:\n        s.ack(LEVELS, lag.pop(0))\n"
        + "import os\nprint(json.dumps([all(out), s.buffered(), os.listdir('spill')]))",
        tmp_path,
    )
    assert got == [True, 5, []]


def test_a_seq_taken_but_never_stored_is_not_a_gap_after_a_clean_stop(tmp_path: Path) -> None:
    # a stop between next_seq() and add(): that record never existed anywhere
    first = mp(
        PRELUDE + "s = Store('.')\nout = fill(s, LEVELS, 3)\ns.next_seq(LEVELS)\ns.flush()\n"
        "print(json.dumps(out))",
        tmp_path,
    )
    second = mp(PRELUDE + "s = Store('.')\nprint(json.dumps(fill(s, LEVELS, 2)))", tmp_path)
    assert first + second == [0, 1, 2, 3, 4]


def test_seq_survives_a_power_cut_during_its_file_replace(tmp_path: Path) -> None:
    # FAT cannot rename over a file: the old one is removed first; a power cut
    # right then leaves only the new reservation in seq.json.tmp
    used = mp(PRELUDE + "s = Store('.')\nprint(json.dumps(fill_span(s, LEVELS, 1200)))", tmp_path)
    seq = tmp_path / "seq.json"
    seq.rename(tmp_path / "seq.json.tmp")
    later = mp(PRELUDE + "s = Store('.')\nprint(json.dumps(fill_span(s, LEVELS, 1)))", tmp_path)
    assert later[0] > used[1]
