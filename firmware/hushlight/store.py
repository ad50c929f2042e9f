"""Records waiting for their PUBACK, and the `seq` counters, kept across reboots.

Flash wears out and power fails mid-write, so:

- `seq` (one counter per kind) is persisted as a high-water mark reserved in
  blocks of `SEQ_BLOCK`: one small file write per block, not per record.
  After a crash the counter restarts at the reserved mark, i.e. it skips
  ahead (never reuses a number the gateway may have seen).  A clean shutdown
  writes the exact next values, so a planned reboot leaves no gap.
- New records sit in a RAM list.  When it passes `ram_max`, the oldest half
  is appended to a segment file in `spill/` (one write of a few KiB, append
  only, a segment is never rewritten: it is deleted whole once every record in
  it is acknowledged).  A clean shutdown spills everything.
- Each record on flash is a 12-byte header (magic, kind, length, seq, CRC-32
  of header and payload) followed by the payload.  At boot the segments are
  scanned; a torn record (power lost mid-write) fails its length or CRC and
  is skipped with the rest of that segment's tail, and counted in `torn`.
- The queue holds at most `capacity` records.  When it is full the oldest
  1 s records go first (a whole segment at a time), summaries only when no
  level record is left; every dropped record is counted in `dropped`.

Records are sent oldest first per kind.  Acknowledgements may arrive out of
order; a record leaves the queue when it and everything older is acknowledged.
"""

import binascii
import json
import os
import struct

LEVELS = 0
SUMMARY = 1
KINDS = ("levels", "summary")
_LETTER = ("L", "S")

SEQ_BLOCK = 1000
_MAGIC = 0xA5
_HDR = "<BBHII"  # magic, kind, payload length, seq, crc32
_HDR_LEN = 12
_SEQ_FILE = "seq.json"
_SEG_MAX = 64  # records per segment file
_MAX_PAYLOAD = 2048


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _join(a, b):
    if not a or a == ".":
        return b
    return a + "/" + b


def write_atomic(path, data):
    """Write a small file so that a power cut leaves the old or the new one."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.rename(tmp, path)
    except OSError:
        # some filesystems refuse to rename over an existing file
        os.remove(path)
        os.rename(tmp, path)


def _crc(head8, payload):
    return binascii.crc32(payload, binascii.crc32(head8)) & 0xFFFFFFFF


def encode_record(kind, seq, payload):
    head8 = struct.pack("<BBHI", _MAGIC, kind, len(payload), seq)
    return head8 + struct.pack("<I", _crc(head8, payload)) + payload


def read_segment(path):
    """Valid records of a segment file as a list of (kind, seq, payload), and
    whether a torn or corrupt tail was cut off."""
    out = []  # type: list
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return out, True
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < _HDR_LEN:
            return out, True
        magic, kind, length, seq, crc = struct.unpack_from(_HDR, data, pos)
        end = pos + _HDR_LEN + length
        if magic != _MAGIC or kind > 1 or length > _MAX_PAYLOAD or end > n:
            return out, True
        payload = data[pos + _HDR_LEN : end]
        if _crc(data[pos : pos + 8], payload) != crc:
            return out, True
        out.append((kind, seq, payload))
        pos = end
    return out, False


class _Queue:
    def __init__(self, kind):
        self.kind = kind
        self.segs = []  # [name, first_seq, last_seq, count], oldest first
        self.ram = []  # [seq, payload], newer than every segment
        self.acked = set()
        self.last_sent = -1
        self.new_seg = None  # segment created in this run, still open for appends
        self._cache_name = None
        self._cache = None

    def front(self):
        if self.segs:
            return self.segs[0][1]
        if self.ram:
            return self.ram[0][0]
        return None

    def count(self):
        n = len(self.ram)
        for s in self.segs:
            n += s[3]
        return n

    def records_of(self, seg, spill_dir):
        if self._cache_name != seg[0]:
            recs, _ = read_segment(_join(spill_dir, seg[0]))
            self._cache = [(r[1], r[2]) for r in recs if r[0] == self.kind]
            self._cache_name = seg[0]
        return self._cache

    def forget_cache(self, name):
        if self._cache_name == name:
            self._cache_name = None
            self._cache = None


class Store:
    def __init__(self, root=".", capacity=2400, ram_max=32):
        self.root = root
        self.spill_dir = _join(root, "spill")
        self.capacity = capacity
        self.ram_max = ram_max
        self.dropped = 0
        self.torn = 0
        self.q = (_Queue(LEVELS), _Queue(SUMMARY))
        if not _exists(self.spill_dir):
            os.mkdir(self.spill_dir)
        self._scan()
        self._load_seq()

    # ---- seq -------------------------------------------------------------

    def _load_seq(self):
        self.next = [0, 0]
        path = _join(self.root, _SEQ_FILE)
        try:
            with open(path) as f:
                d = json.load(f)
            self.next = [int(d.get("levels", 0)), int(d.get("summary", 0))]
        except (OSError, ValueError):
            pass  # a new device, or a torn file: the spilled records still bound seq below
        for k in (LEVELS, SUMMARY):
            q = self.q[k]
            if q.segs and q.segs[-1][2] + 1 > self.next[k]:
                self.next[k] = q.segs[-1][2] + 1
        self.reserved = [0, 0]
        self._reserve()

    def _reserve(self):
        self.reserved = [self.next[0] + SEQ_BLOCK, self.next[1] + SEQ_BLOCK]
        self._write_seq(self.reserved)

    def _write_seq(self, values):
        data = json.dumps({"levels": values[0], "summary": values[1]})
        write_atomic(_join(self.root, _SEQ_FILE), data.encode())

    def next_seq(self, kind):
        seq = self.next[kind]
        self.next[kind] = seq + 1
        if self.next[kind] >= self.reserved[kind]:
            self._reserve()
        return seq

    # ---- boot scan -------------------------------------------------------

    def _scan(self):
        names = sorted(os.listdir(self.spill_dir))
        for name in names:
            path = _join(self.spill_dir, name)
            if name.endswith(".tmp") or name[:1] not in _LETTER:
                os.remove(path)
                continue
            kind = _LETTER.index(name[0])
            recs, torn = read_segment(path)
            recs = [r for r in recs if r[0] == kind]
            if torn:
                self.torn += 1
            if not recs:
                os.remove(path)
                continue
            self.q[kind].segs.append([name, recs[0][1], recs[-1][1], len(recs)])
        for q in self.q:
            q.segs.sort(key=lambda s: s[1])

    # ---- queue -----------------------------------------------------------

    def add(self, kind, seq, payload):
        q = self.q[kind]
        q.ram.append([seq, payload])
        if len(q.ram) > self.ram_max:
            self._spill(q, len(q.ram) // 2)
        while self.buffered() > self.capacity:
            self._drop_oldest()

    def _spill(self, q, n):
        if n <= 0:
            return
        move = q.ram[:n]
        seg = q.new_seg
        if seg is None or seg[3] + n > _SEG_MAX:
            name = "%s%010d" % (_LETTER[q.kind], move[0][0])
            seg = [name, move[0][0], move[0][0], 0]
            q.segs.append(seg)
            q.new_seg = seg
        with open(_join(self.spill_dir, seg[0]), "ab") as f:
            for r in move:
                f.write(encode_record(q.kind, r[0], r[1]))
        seg[2] = move[-1][0]
        seg[3] += n
        q.forget_cache(seg[0])
        del q.ram[:n]

    def _remove_seg(self, q):
        seg = q.segs.pop(0)
        if q.new_seg is seg:
            q.new_seg = None
        q.forget_cache(seg[0])
        try:
            os.remove(_join(self.spill_dir, seg[0]))
        except OSError:
            pass
        return seg

    def _drop_oldest(self):
        for kind in (LEVELS, SUMMARY):
            q = self.q[kind]
            if q.segs:
                recs = q.records_of(q.segs[0], self.spill_dir)
                lost = 0
                for r in recs:
                    if r[0] in q.acked:
                        q.acked.discard(r[0])
                    else:
                        lost += 1
                self.dropped += lost
                self._remove_seg(q)
                return
            if q.ram:
                r = q.ram.pop(0)
                if r[0] in q.acked:
                    q.acked.discard(r[0])
                else:
                    self.dropped += 1
                return

    def buffered(self):
        return self.q[0].count() + self.q[1].count() - len(self.q[0].acked) - len(self.q[1].acked)

    def next_unsent(self, kind):
        """The oldest record of `kind` not yet sent on this connection, as
        (seq, payload), or None; it counts as sent from now on."""
        q = self.q[kind]
        last = q.last_sent
        for seg in q.segs:
            if seg[2] <= last:
                continue
            for r in q.records_of(seg, self.spill_dir):
                if r[0] > last and r[0] not in q.acked:
                    q.last_sent = r[0]
                    return r
        for r in q.ram:
            if r[0] > last and r[0] not in q.acked:
                q.last_sent = r[0]
                return r
        return None

    def rewind(self):
        """Send every unacknowledged record again (a new connection)."""
        for q in self.q:
            q.last_sent = -1

    def ack(self, kind, seq):
        q = self.q[kind]
        front = q.front()
        if front is None or seq < front:
            return  # a duplicate acknowledgement of a record already gone
        q.acked.add(seq)
        while q.segs:
            seg = q.segs[0]
            if seg[1] not in q.acked:
                break
            recs = q.records_of(seg, self.spill_dir)
            done = True
            for r in recs:
                if r[0] not in q.acked:
                    done = False
                    break
            if not done:
                break
            for r in recs:
                q.acked.discard(r[0])
            self._remove_seg(q)
        if not q.segs:
            while q.ram and q.ram[0][0] in q.acked:
                q.acked.discard(q.ram.pop(0)[0])

    def pending(self):
        """True if some record has not been acknowledged yet."""
        return self.buffered() > 0

    def flush(self):
        """Before a planned stop: everything to flash, exact seq values."""
        for q in self.q:
            # acknowledged records still in RAM need no flash
            keep = [r for r in q.ram if r[0] not in q.acked]
            for r in q.ram:
                q.acked.discard(r[0])
            q.ram = keep
            while q.ram:
                self._spill(q, min(len(q.ram), _SEG_MAX))
                q.new_seg = None
        self._write_seq(self.next)
