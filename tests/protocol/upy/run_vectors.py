# Runs protocol operations under the MicroPython unix port for the shared
# vector tests: reads operations (one JSON object per line) from the file
# named on the command line, prints one JSON line per operation with what
# protocol/ did.
import binascii
import json
import sys

from protocol import payloads, strictjson, topics
from protocol.errors import ProtocolError


def _number(v):
    # JSON cannot carry NaN and infinities; the vectors spell them as strings.
    if v == "nan":
        return float("nan")
    if v == "inf":
        return float("inf")
    if v == "-inf":
        return -float("inf")
    return v


def run(op):
    what = op["op"]
    if what == "decode":
        return {"fields": payloads.decode(op["kind"], binascii.unhexlify(op["hex"]))}
    if what == "double":
        text = op["text"].encode()
        return {"double": strictjson.double(text, 0, len(text))}
    if what == "topic":
        site, kind, ident, leaf = topics.parse(op["topic"])
        return {"parts": [site, kind, ident, leaf], "message": topics.message_kind(kind, leaf)}
    fields = {}
    for k in op["fields"]:
        fields[k] = _number(op["fields"][k])
    if what == "encode":
        return {"payload": payloads.encode(op["kind"], fields).decode()}
    if what == "encode_levels":
        return {"payload": payloads.encode_levels(**fields).decode()}
    raise ValueError("unknown op " + what)


def main():
    # one operation per line, read one at a time: thousands of them would not
    # fit in the sensor-sized heap at once
    with open(sys.argv[1]) as f:
        for line in f:
            report(json.loads(line))


def report(op):
    try:
        out = run(op)
        out["ok"] = True
    except ProtocolError as e:
        out = {"ok": False, "reason": e.reason, "field": e.field, "message": str(e)}
    print(json.dumps(out))


main()
