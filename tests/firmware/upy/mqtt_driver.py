# Drives hushlight.mqtt.MQTTClient in the MicroPython unix port for the
# tests in tests/firmware/test_mqtt.py.
#
# argv[1]: path of a JSON file (long command lines crash this unix port
# build) holding an object of MQTTClient keyword arguments plus
#   "subscribe": [[topic, qos], ...]  subscribed in on_connect
#   "stop_after_failures": N          exit after N failed connection attempts
#   "factory_port": P                 a socket_factory that connects to 127.0.0.1:P
#   "plain_on_connect": true          on_connect is a plain function, not a coroutine
#   "hang_on_connect": N              on_connect of the first N connections never returns
#   "report_down": true               emit each on_down (why, retry_ms) as a "down" event
# stdin: one JSON command per line:
#   {"op": "publish", "topic", "payload" | "fill": N, "qos", "retain", "as_str"}
#   {"op": "flood", "topic", "fill": bytes, "count"}  QoS 0 messages back to back
#   {"op": "burst", "topic", "count", "fill"}  QoS 1, 20 in flight, then the heap
#   {"op": "subscribe", "topic", "qos"}
#   {"op": "stats"}
#   {"op": "disconnect"}
# stdout: one JSON event per line ("ev": connected, message, puback,
# published, subscribed, error, stats, failures, disconnected, down).
# `stats` holds the client's counters, inflight, connected, last_error and
# url (the broker in use).
import asyncio
import gc
import json
import socket
import sys

from hushlight.mqtt import MQTTClient


def emit(ev, **fields):
    fields["ev"] = ev
    print(json.dumps(fields))


def main():
    with open(sys.argv[1]) as f:
        opts = json.load(f)
    subscribe = opts.pop("subscribe", [])
    stop_after = opts.pop("stop_after_failures", 0)
    factory_port = opts.pop("factory_port", 0)
    opts_plain = opts.pop("plain_on_connect", False)
    hang = [opts.pop("hang_on_connect", 0)]
    report_down = opts.pop("report_down", False)
    if factory_port:
        # stands in for the radio: whatever host the client names, connect here
        def factory(host, port):
            s = socket.socket()
            s.connect(socket.getaddrinfo("127.0.0.1", factory_port)[0][-1])
            s.setblocking(False)
            return s

        opts["socket_factory"] = factory
    client = MQTTClient(opts.pop("client_id"), opts.pop("host"), opts.pop("port"), **opts)

    async def on_connect():
        for topic, qos in subscribe:
            await client.subscribe(topic, qos)
        if hang[0]:
            hang[0] -= 1
            emit("hanging", connects=client.stats["connects"])
            await asyncio.Event().wait()  # nobody sets it
        emit("connected", connects=client.stats["connects"])

    def on_message(topic, payload, retained):
        emit("message", topic=topic, payload=payload.decode(), retained=retained)

    def on_puback(pid):
        emit("puback", pid=pid)

    def on_connect_plain():
        emit("connected", connects=client.stats["connects"], plain=True)

    client.on_connect = on_connect_plain if opts_plain else on_connect
    client.on_message = on_message
    client.on_puback = on_puback
    if report_down:
        client.on_down = lambda why, retry_ms: emit("down", why=why, retry_ms=retry_ms)

    async def commands():
        stdin = asyncio.StreamReader(sys.stdin)
        while True:
            line = await stdin.readline()
            if not line:
                return
            cmd = json.loads(line)
            op = cmd["op"]
            try:
                if op == "publish":
                    if "fill" in cmd:
                        payload = b"x" * cmd["fill"]
                    elif cmd.get("as_str"):
                        payload = cmd["payload"]
                    else:
                        payload = cmd["payload"].encode()
                    pid = await client.publish(
                        cmd["topic"], payload, cmd.get("qos", 0), cmd.get("retain", False)
                    )
                    emit("published", pid=pid, inflight=client.inflight())
                elif op == "flood":
                    # QoS 0 messages until `count` are sent or the link fails
                    payload = b"x" * cmd["fill"]
                    for _ in range(cmd["count"]):
                        await client.publish(cmd["topic"], payload)
                    emit("flooded")
                elif op == "burst":
                    # QoS 1 messages as fast as acknowledgements allow, then the heap
                    payload = b"y" * cmd.get("fill", 100)
                    for _ in range(cmd["count"]):
                        while client.inflight() >= 20:
                            await asyncio.sleep_ms(1)
                        await client.publish(cmd["topic"], payload, 1)
                    while client.inflight():
                        await asyncio.sleep_ms(1)
                    gc.collect()
                    emit("burst", mem_alloc=gc.mem_alloc())
                elif op == "subscribe":
                    emit("subscribed", code=await client.subscribe(cmd["topic"], cmd.get("qos", 1)))
                elif op == "stats":
                    stats = dict(client.stats)
                    stats["inflight"] = client.inflight()
                    stats["connected"] = client.connected()
                    stats["last_error"] = client.last_error
                    stats["url"] = client.url
                    emit("stats", **stats)
                elif op == "disconnect":
                    await client.disconnect()
                    return
            except OSError as e:
                emit("error", op=op, error=str(e))

    async def watch_failures():
        while client.stats["connect_failures"] < stop_after:
            await asyncio.sleep_ms(20)
        emit("failures", n=client.stats["connect_failures"], last_error=client.last_error)
        await client.disconnect()

    async def run():
        runner = asyncio.create_task(client.run())
        tasks = [asyncio.create_task(commands())]
        if stop_after:
            tasks.append(asyncio.create_task(watch_failures()))
        await runner
        emit("disconnected", stats=client.stats)
        for t in tasks:
            t.cancel()

    asyncio.run(run())


main()
