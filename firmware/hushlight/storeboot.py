"""A store's boot: the spilled segments found on flash and the `seq`
counters read back (hushlight.store).  Runs once per boot, loaded for that
and dropped again (hushlight.once).
"""

import json
import os

from hushlight.store import _LETTER, _SEQ_FILE, LEVELS, SUMMARY, _join, read_segment


def scan(store):
    """The spilled segments on flash, into the queues; torn tails counted, junk removed."""
    names = sorted(os.listdir(store.spill_dir))
    for name in names:
        path = _join(store.spill_dir, name)
        if name.endswith(".tmp") or name[:1] not in _LETTER:
            os.remove(path)
            continue
        kind = _LETTER.index(name[0])
        recs, torn = read_segment(path)
        recs = [r for r in recs if r[0] == kind]
        if torn:
            store.torn += 1
        if not recs:
            os.remove(path)
            continue
        store.q[kind].segs.append([name, recs[0][1], recs[-1][1], len(recs)])
    for q in store.q:
        q.segs.sort(key=lambda s: s[1])


def load_seq(store):
    """The `seq` counters from seq.json and the spilled segments.  Nothing is
    reserved yet: the first `next_seq` of either kind reserves a block of both."""
    store.next = [0, 0]
    path = _join(store.root, _SEQ_FILE)
    # the .tmp too: where rename cannot replace a file (FAT), power lost
    # between removing the old file and renaming the new one leaves only it
    for name in (path, path + ".tmp"):
        try:
            with open(name) as f:
                d = json.load(f)
            levels, summary = int(d.get("levels", 0)), int(d.get("summary", 0))
        except (OSError, ValueError, AttributeError):
            continue  # absent or torn: the other file and the spill bound seq
        store.next = [max(store.next[0], levels), max(store.next[1], summary)]
    for k in (LEVELS, SUMMARY):
        q = store.q[k]
        if q.segs and q.segs[-1][2] + 1 > store.next[k]:
            store.next[k] = q.segs[-1][2] + 1
    # the seq after the last record stored; see flush()
    store.after_added = [store.next[0], store.next[1]]
    store.reserved = [store.next[0], store.next[1]]
