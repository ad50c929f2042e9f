"""Staging an update: an offered release received into the free slot (what
travels: protocol.ota; what boots: otaboot.py, the loader).

    offer     -> the slot not running is emptied; the release is asked for
                 in windows from its first missing byte, again after 3 s
                 without progress (a lost chunk, a reconnection)
    manifest  -> its signature is checked with release.pub, then its lines
                 one by one: version, min_version, mpy, sizes, free flash
    each file -> written with a running sha256, checked at its end
    all good  -> ota.json: the new slot, on trial; the store is flushed and
                 the sensor reboots into it

This module holds what runs for every chunk and stays loaded while a
staging lasts (the Staging object keeps it); the rarer steps are modules
of their own, loaded for each and dropped again, so that no two of them
share the heap with the staging: hushlight.otaoffer (an offer, a staging
resumed after a reboot), hushlight.otaverify (the manifest's signature and
checks) and hushlight.otaend (the switch, a refusal or a cancel).
ota/stage.json remembers the offer, the slot and the files complete, so
a staging cut short by a reboot resumes where it stopped.  A refusal
deletes what was written, records the reason in ota.json (`last`) and
status, and the running version carries on.
"""

import asyncio
import binascii
import gc
import hashlib
import json
import time

from micropython import const

from hushlight import forget, once, platform

# a name mypy takes as true: the types of Staging's declared attributes; a
# const, so that MicroPython compiles the block below away
TYPE_CHECKING = const(0)
if TYPE_CHECKING:
    from typing import Any

STAGE = "ota/stage.json"
MANIFEST = "manifest.txt"
WINDOW = 4096  # protocol.ota.WINDOW: bytes asked for at once
# ask again after this long without a new byte
RETRY_MS = 3000
# give up after this long without a new byte (the tool went away)
GIVE_UP_MS = 600000
_ENOSPC = 28
BAD_SIG = "the signature does not match this sensor's release key"


class Staging:
    """One release being received; hushlight.otaoffer gives it its
    attributes (as hushlight.start does for the App's parts)."""

    app: "Any"
    offer: dict
    version: str
    size: int  # the manifest's bytes
    total: int  # the release's bytes
    slot: str
    dir: str  # "ota/a/" or "ota/b/"
    have: int  # release bytes received and written: the next offset wanted
    asked: int  # the end of the window asked for
    asked_at: "Any"  # ticks_ms
    progress: "Any"  # ticks_ms of the last new byte
    event: "asyncio.Event"
    task: "Any"
    over: bool
    staged: bool
    checking: bool  # the manifest is in, its checks wait for the task
    reopen: int  # > -1: files complete before a reboot, to check again first
    f: "Any"  # the file being written
    h: "Any"  # its running sha256
    left: int  # its bytes still to come
    path: str
    digest: str
    man: "Any"  # the manifest, open at the next file line
    done: int  # files complete (-1: the manifest is not checked yet)
    limit: "int | None"  # unix port, tests: bytes the flash still takes
    # pow(signature, e, n) of the offer under release.pub, as bytes
    # (protocol.ota.signed_block; None until worked out)
    block: "Any"

    def kick(self):
        """Ask again at once (a new connection, the same offer again)."""
        self.asked = self.have
        if self.task is None:
            self.task = asyncio.create_task(self.run())
        self.event.set()

    async def run(self):
        app = self.app
        topic = app.t_status[:-6] + "ota/get"
        tries = 0
        while self.block is None and not self.over:
            # the pow wants blocks of 770 bytes, which come and go with the
            # records a sensor keeps: tried again a few times, a second apart
            try:
                self.read_key()
            except MemoryError:
                tries += 1
                if tries < 10:
                    await asyncio.sleep_ms(1000)
                    continue
                self.end("out of memory while staging")
            except ValueError as e:
                self.end(str(e))
        if self.reopen >= 0 and not self.over:
            # a staging resumed after a reboot: the manifest is checked again
            self.take(self._resume)
        while not self.over:
            if self.checking:
                self.take(self._manifest)
                self.checking = False
                self.asked = self.have  # now the files
                continue
            if self.staged:
                once("otaend").switch(self)
                return
            now = time.ticks_ms()
            if time.ticks_diff(now, self.progress) >= GIVE_UP_MS:
                self.end("the release stopped coming at byte %d of %d" % (self.have, self.total))
                return
            quiet = time.ticks_diff(now, self.asked_at) >= RETRY_MS
            if app.mqtt.connected() and (self.have >= self.asked or quiet):
                self.asked = min(self.have + WINDOW, self.total)
                self.asked_at = now
                msg = '{"version":"%s","offset":%d,"length":%d}' % (
                    self.version,
                    self.have,
                    self.asked - self.have,
                )
                try:
                    await app.mqtt.publish(topic, msg)
                except OSError:
                    pass  # not connected: the next connection kicks
            self.event.clear()
            try:
                await asyncio.wait_for_ms(self.event.wait(), 1000)
            except asyncio.TimeoutError:
                pass

    def chunk(self, payload):
        """A chunk message (hushlight.app._on_message): a memoryview of the
        MQTT client's receive buffer (MQTTClient.views), written to flash
        and hashed before this returns, never kept and never copied."""
        if self.over or self.staged or self.checking or self.reopen >= 0 or len(payload) < 4:
            return
        # (indexing a view makes no object; the offset fits a small int)
        off = payload[0] << 24 | payload[1] << 16 | payload[2] << 8 | payload[3]
        if off != self.have:
            return  # a duplicate, or past a lost chunk: the next ask mends it
        self.take(self._chunk, off, payload)
        if not self.over:
            self.progress = time.ticks_ms()
            if self.have >= self.asked or self.staged:
                self.event.set()

    def take(self, fn, *args):
        """Run fn(*args); a release that is not what it should be, a full
        flash, a heap too small: refused, the running version carries on."""
        try:
            fn(*args)
            return
        except ValueError as e:
            why = str(e)
        except OSError as e:
            if e.args and e.args[0] == _ENOSPC:
                why = "flash full while staging"
            else:
                why = "flash write failed while staging: %s" % e
        except MemoryError:
            why = "out of memory while staging"
        self.end(why)

    def _chunk(self, off, payload):
        n = len(payload) - 4
        if n == 0:
            raise ValueError("the release ended at byte %d of %d" % (off, self.total))
        if off + n > self.total:
            raise ValueError("the release is longer than the %d bytes offered" % self.total)
        self._take(payload[4:])

    def end(self, reason, state="refused"):
        """Stop here (refused, or cancelled: state idle); what was written goes."""
        self.over = True
        for f in (self.f, self.man):
            if f is not None:
                f.close()
        self.f = self.man = self.h = None
        once("otaend").end(self, state, reason)

    def read_key(self):
        """The block the offer's signature carries (protocol.ota.signed_block),
        with protocol.ota loaded alone: after a reboot, or when the offer
        found no room for it."""
        from protocol import ota

        gc.collect()
        try:
            with open("release.pub") as f:
                n, e = ota.parse_public_key(f.read())
            block = ota.signed_block(n, e, binascii.a2b_base64(self.offer["sig"]))
        except ValueError as e:
            raise ValueError("release.pub is not a release key: %s" % e)
        finally:
            forget("protocol.ota")
        if not block:
            raise ValueError(BAD_SIG)
        self.block = block

    def _manifest(self):
        self.step("manifest")
        self.signed(self.h.digest())
        self.h = None
        once("otaverify").manifest_done(self)

    def _resume(self):
        self.signed(once("otaverify").digest(self))
        once("otaverify").to_files(self, self.reopen)
        self.reopen = -1

    # ---- the bytes --------------------------------------------------------

    def signed(self, digest):
        """Raise ValueError unless the manifest's sha256 `digest` is what the
        offer's signature carries (protocol.ota.verify, in two steps: the pow
        was done when the offer came, see `block`)."""
        from protocol import ota

        try:
            ok = self.block and self.block == ota.pkcs1_block(digest, len(self.block))
        finally:
            forget("protocol.ota")
        if not ok:
            raise ValueError(BAD_SIG)

    def step(self, name):
        """The test hook of the unix port (otastate.step): say the step, maybe hold."""
        if platform.UNIX:
            gc.collect()  # what the heap has left for the staging at this step
            print("ota: %d B free at %s" % (gc.mem_free(), name))
            try:
                open("ota_hold").close()
            except OSError:
                print("ota: step " + name)  # (no hold: otastate stays unloaded)
                return
            import otastate

            otastate.step(name)
            forget("otastate")

    def save(self):
        with open(STAGE, "w") as f:
            f.write(json.dumps({"offer": self.offer, "slot": self.slot, "files": self.done}))

    def _write(self, data):
        f = self.f
        if f is None:
            raise ValueError("the release has more bytes than its manifest lists")
        if self.limit is not None:
            self.limit -= len(data)
            if self.limit < 0:
                raise OSError(_ENOSPC, "no space left")
        f.write(data)
        self.h.update(data)

    def _take(self, mv):
        i = 0
        n = len(mv)
        while i < n:
            k = n - i
            if self.done < 0:
                k = min(k, self.size - self.have)
            else:
                k = min(k, self.left)
            self._write(mv[i : i + k])
            i += k
            self.have += k
            if self.done < 0:
                if self.have == self.size:
                    # checked by the task, out of the MQTT reader's way (and its
                    # chunk's heap); the bytes after it are asked for again
                    self.f.close()
                    self.f = None
                    self.checking = True
                    return
            else:
                self.left -= k
                if not self.left:
                    self._file_done()

    def next_file(self):
        """Open the next file of the (checked) manifest; none left: staged."""
        line = self.man.readline()
        while line and not line.startswith("file "):
            line = self.man.readline()  # the manifest's head
        if not line:
            self.man.close()
            self.man = None
            self.staged = True
            self.app.ota = {"ota": "staged", "ota_version": self.version, "ota_reason": None}
            self.app.status_changed.set()
            return
        words = line.split()  # file PATH SIZE SHA256, checked by otaverify
        self.path, self.left, self.digest = words[1], int(words[2]), words[3]
        self.f = open(self.dir + self.path, "wb")
        self.h = hashlib.sha256()
        if not self.left:
            self._file_done()

    def _file_done(self):
        self.f.close()
        self.f = None
        if binascii.hexlify(self.h.digest()).decode() != self.digest:
            raise ValueError("file %s does not match its sha256 in the manifest" % self.path)
        self.h = None
        self.done += 1
        self.save()
        self.step("file")
        self.next_file()
