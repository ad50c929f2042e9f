"""The microphone source: an INMP441 on the ESP32's I2S peripheral (see
hushlight.sources for the interface).  Only the ESP32 loads this module.
"""

from hushlight.sources import _SETTLE_MS, check_rate


class I2SSource:
    """The microphone on the ESP32's I2S peripheral (INMP441: L/R to GND, left slot)."""

    live = True

    def __init__(self, rate, block, sck=32, ws=25, sd=33, i2s_id=0):
        import asyncio

        from machine import I2S, Pin

        check_rate(rate)
        self.rate = rate
        self._i2s = I2S(
            i2s_id,
            sck=Pin(sck),
            ws=Pin(ws),
            sd=Pin(sd),
            mode=I2S.RX,
            bits=32,
            format=I2S.MONO,
            rate=rate,
            ibuf=block * 4 * 4,
        )
        self._reader = asyncio.StreamReader(self._i2s)
        self._buf = None
        self._mv = None
        # samples to discard while the microphone settles, in whatever parts
        # of a block the caller reads (the DMA buffer holds 4 whole blocks)
        self._settle = _SETTLE_MS * rate // 1000

    async def _fill(self, buf, n):
        # one memoryview per buffer, made once: the loop below allocates only
        # when the driver hands out a partial block
        if self._mv is None or self._buf is not buf:
            self._buf = buf
            self._mv = memoryview(buf)
        mv = self._mv
        got = await self._reader.readinto(mv[:n] if n != len(buf) else mv)
        while got < 4 * n:
            k = await self._reader.readinto(mv[got // 4 : n])
            if not k:
                return False
            got += k
        return True

    async def aread_block(self, buf, n):
        while self._settle > 0:
            self._settle -= n
            await self._fill(buf, n)
        return await self._fill(buf, n)

    def close(self):
        self._i2s.deinit()
