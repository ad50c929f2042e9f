"""Records waiting for their PUBACK, and the `seq` counters, kept across reboots.

Flash wears out and power fails mid-write, so:

- `seq` (one counter per kind) is persisted as a high-water mark reserved in
  blocks of `SEQ_BLOCK`: one small file write per block, not per record.
  After a crash the counter restarts at the reserved mark, i.e. it skips
  ahead (never reuses a number the gateway may have seen).  A clean shutdown
  writes the exact next values, so a planned reboot leaves no gap.  The first
  block is reserved with the first seq taken, not at boot, so a start-up cut
  short (a reset while connecting, a boot loop) skips no seq.
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

from hushlight import once

LEVELS = 0
SUMMARY = 1
KINDS = ("levels", "summary")
_LETTER = ("L", "S")

SEQ_BLOCK = 1000
_MAGIC = 0xA5
_HDR = "<BBHII"  # magic, kind, payload length, seq, crc32
_HDR_LEN = 12
_SEQ_FILE = "seq.json"
# records per segment file: one segment is read into RAM while it is sent
# (~2.5 KiB of objects), and a sensor without PSRAM has ~110 KiB of heap
_SEG_MAX = 16
# RAM ring sizes: ~7 one-second records (~130 bytes each), 2 summaries
# (~200, at most ~250 bytes); beyond that the older half goes to flash
RAM_LEVELS = 1024
RAM_SUMMARY = 512
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
    whether a torn or corrupt tail was cut off.  Read record by record: a
    whole segment never sits in RAM twice."""
    out = []  # type: list
    head = bytearray(_HDR_LEN)
    try:
        f = open(path, "rb")
    except OSError:
        return out, True
    with f:
        while True:
            n = f.readinto(head)
            if not n:
                return out, False
            if n < _HDR_LEN:
                return out, True
            magic, kind, length, seq, crc = struct.unpack(_HDR, head)
            if magic != _MAGIC or kind > 1 or length > _MAX_PAYLOAD:
                return out, True
            payload = f.read(length)
            if len(payload) < length or _crc(head[:8], payload) != crc:
                return out, True
            out.append((kind, seq, payload))


class _Ring:
    """The newest records of one kind in RAM: one preallocated bytearray
    holding them back to back in their flash encoding (header + payload), so
    records never become heap objects of their own (a heap of long-lived
    100-byte objects fragments until no large block is left) and a spill is
    one write of a slice."""

    def __init__(self, buf):
        self.buf = buf
        self.mv = memoryview(buf)
        self.head = 0  # offset of the oldest record
        self.tail = 0  # offset after the newest record
        self.count = 0

    def seq_at(self, off):
        return struct.unpack_from("<I", self.buf, off + 4)[0]

    def size_at(self, off):
        return _HDR_LEN + struct.unpack_from("<H", self.buf, off + 2)[0]

    def first_seq(self):
        return self.seq_at(self.head) if self.count else None

    def room(self, need):
        if self.tail + need <= len(self.buf):
            return True
        gap = self.head
        if gap:
            # slide the records to the front, in pieces no longer than the
            # gap so that source and destination never overlap
            src = gap
            while src < self.tail:
                k = min(gap, self.tail - src)
                self.buf[src - gap : src - gap + k] = self.mv[src : src + k]
                src += k
            self.tail -= gap
            self.head = 0
        return self.tail + need <= len(self.buf)

    def append(self, kind, seq, payload):
        off = self.tail
        buf = self.buf
        struct.pack_into("<BBHI", buf, off, _MAGIC, kind, len(payload), seq)
        crc = binascii.crc32(payload, binascii.crc32(self.mv[off : off + 8])) & 0xFFFFFFFF
        struct.pack_into("<I", buf, off + 8, crc)
        end = off + _HDR_LEN + len(payload)
        buf[off + _HDR_LEN : end] = payload
        self.tail = end
        self.count += 1

    def pop(self):
        seq = self.seq_at(self.head)
        self.head += self.size_at(self.head)
        self.count -= 1
        if not self.count:
            self.head = self.tail = 0
        return seq

    def offsets(self):
        off = self.head
        while off < self.tail:
            yield off
            off += self.size_at(off)

    def payload(self, off):
        return bytes(self.mv[off + _HDR_LEN : off + self.size_at(off)])


class _Queue:
    def __init__(self, kind, ring):
        self.kind = kind
        self.segs = []  # [name, first_seq, last_seq, count], oldest first
        self.ram = _Ring(ring)  # newer than every segment
        self.acked = set()
        self.last_sent = -1
        self.new_seg = None  # segment created in this run, still open for appends
        self._cache_name = None
        self._cache = None

    def front(self):
        if self.segs:
            return self.segs[0][1]
        return self.ram.first_seq()

    def count(self):
        n = self.ram.count
        for s in self.segs:
            n += s[3]
        return n

    def records_of(self, seg, spill_dir):
        if self._cache_name != seg[0]:
            self._cache = None  # the old list goes before the new one is read
            recs, _ = read_segment(_join(spill_dir, seg[0]))
            self._cache = [(r[1], r[2]) for r in recs if r[0] == self.kind]
            self._cache_name = seg[0]
        return self._cache

    def forget_cache(self, name):
        if self._cache_name == name:
            self._cache_name = None
            self._cache = None


class Store:
    """`rings`: the two preallocated RAM buffers (levels, summaries); the
    application allocates them early, while the heap is still in one piece."""

    # set at boot by hushlight.storeboot (declared for mypy; no cost at run time)
    next: list
    reserved: list
    after_added: list

    def __init__(self, root=".", capacity=2400, rings=None):
        self.root = root
        self.spill_dir = _join(root, "spill")
        self.capacity = capacity
        self.dropped = 0
        self.torn = 0
        if rings is None:
            rings = (bytearray(RAM_LEVELS), bytearray(RAM_SUMMARY))
        self.q = (_Queue(LEVELS, rings[0]), _Queue(SUMMARY, rings[1]))
        if not _exists(self.spill_dir):
            os.mkdir(self.spill_dir)
        boot = once("storeboot")
        boot.scan(self)
        boot.load_seq(self)

    # ---- seq -------------------------------------------------------------

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

    # ---- queue -----------------------------------------------------------

    def add(self, kind, seq, payload):
        q = self.q[kind]
        ring = q.ram
        need = _HDR_LEN + len(payload)
        while not ring.room(need):
            # full: the older half goes to flash in one append
            self._spill(q, max(1, ring.count // 2))
        ring.append(kind, seq, payload)
        self.after_added[kind] = seq + 1
        while self.buffered() > self.capacity:
            self._drop_oldest()

    def _spill(self, q, n):
        ring = q.ram
        n = min(n, ring.count)
        if n <= 0:
            return
        seg = q.new_seg
        if seg is None or seg[3] + n > _SEG_MAX:
            first = ring.first_seq()
            name = "%s%010d" % (_LETTER[q.kind], first)
            seg = [name, first, first, 0]
            q.segs.append(seg)
            q.new_seg = seg
        start = ring.head
        end = start
        last = 0
        for _ in range(n):
            last = ring.seq_at(end)
            end += ring.size_at(end)
        with open(_join(self.spill_dir, seg[0]), "ab") as f:
            # the ring holds the records in their flash encoding already
            f.write(ring.mv[start:end])
        for _ in range(n):
            ring.pop()
        seg[2] = last
        seg[3] += n
        q.forget_cache(seg[0])

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
            if q.ram.count:
                seq = q.ram.pop()
                if seq in q.acked:
                    q.acked.discard(seq)
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
        ring = q.ram
        for off in ring.offsets():
            seq = ring.seq_at(off)
            if seq > last and seq not in q.acked:
                q.last_sent = seq
                return seq, ring.payload(off)
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
            ring = q.ram
            while ring.count and ring.first_seq() in q.acked:
                q.acked.discard(ring.pop())

    def pending(self):
        """True if some record has not been acknowledged yet."""
        return self.buffered() > 0

    def flush(self):
        """Before a planned stop: everything to flash, exact seq values."""
        for q in self.q:
            ring = q.ram
            # acknowledged records at the front need no flash
            while ring.count and ring.first_seq() in q.acked:
                q.acked.discard(ring.pop())
            while ring.count:
                q.new_seg = None
                self._spill(q, min(ring.count, _SEG_MAX))
        # a seq taken for a record that a stop interrupted before it was stored
        # never left the device: the next boot may use it again, no gap
        self._write_seq(self.after_added)
