"""A Zenoh client that is not rill: the Python `eclipse-zenoh` package and
the encodings of docs/wire.md, nothing else.

    client.py tap  --connect EP --count N KEY...
        Subscribes to KEY... (key expressions: what `WriteToZenoh` stages
        publish) until N records came in all, and prints one JSON line per
        record:
        {"key_expr": ..., "encoding": "json" | "rill", "seq": ..., "fields": {...}}
        (`seq` is the record's sequence number in a rill batch, else null).
        Values print in rill's JSON mapping: bytes as {"$bytes": base64},
        tensors as {"dtype", "shape", "data"}.

    client.py feed --connect EP [--json-key K] [--rill-key K] < records.jsonl
        Publishes each record (one JSON object a line, in rill's JSON
        mapping) on K in that encoding, for a `ReadFromZenoh` source: one JSON
        object per message on --json-key; on --rill-key, the first half as a
        `DataMsg::Batch`, the rest as a bare record list, then a `DataMsg::End`
        (which ReadFromZenoh ignores: it ends after `max_records`). It waits
        for the subscriber before it publishes, and, afterwards, until the
        subscriber is gone (the reader has ended).

The session is a peer on loopback with multicast scouting off, as rill's.
"""

import argparse
import base64
import json
import queue
import random
import struct
import sys
import time

import zenoh

# -- the session ---------------------------------------------------------


def open_session(connect):
    """A peer that connects to `connect`, listens on loopback only and does
    no multicast scouting (rill's own settings)."""
    config = {
        "mode": "peer",
        "listen": {"endpoints": ["tcp/127.0.0.1:0"]},
        "connect": {"endpoints": connect},
        "scouting": {"multicast": {"enabled": False}, "gossip": {"enabled": True}},
    }
    for e in connect:
        assert e.startswith("tcp/127.0.0.1:"), f"loopback only, not {e}"
    return zenoh.open(zenoh.Config.from_json5(json.dumps(config)))


# -- rill's binary encoding (docs/wire.md) -------------------------------

HEADER = b"\xb7\x02"  # magic byte, layout version
DTYPES = ["f32", "f64", "i64", "u8"]


class Tensor:
    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, list(shape), list(data)


def from_json(v):
    """rill's JSON mapping to Python values: {"$bytes": b64} is bytes, an
    object of exactly dtype/shape/data with a known dtype a Tensor."""
    if isinstance(v, list):
        return [from_json(x) for x in v]
    if isinstance(v, dict):
        if set(v) == {"$bytes"} and isinstance(v["$bytes"], str):
            return base64.b64decode(v["$bytes"])
        if set(v) == {"dtype", "shape", "data"} and v["dtype"] in DTYPES:
            return Tensor(v["dtype"], v["shape"], v["data"])
        return {k: from_json(x) for k, x in v.items()}
    return v


def to_json(v):
    """The other way: Python values to rill's JSON mapping."""
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode()}
    if isinstance(v, Tensor):
        return {"dtype": v.dtype, "shape": v.shape, "data": v.data}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    return v


def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def zigzag(n):
    if not -(1 << 63) <= n < 1 << 63:
        raise ValueError(f"{n} does not fit an i64")
    return varint((n << 1) ^ (n >> 63))


def text(s):
    b = s.encode()
    return varint(len(b)) + b


def value(v):
    if v is None:
        return b"\x00"
    if isinstance(v, bool):  # before int: True is an int in Python
        return b"\x01" + bytes([v])
    if isinstance(v, int):
        return b"\x02" + zigzag(v)
    if isinstance(v, float):
        return b"\x03" + struct.pack("<d", v)
    if isinstance(v, str):
        return b"\x04" + text(v)
    if isinstance(v, (bytes, bytearray)):
        return b"\x05" + varint(len(v)) + bytes(v)
    if isinstance(v, list):
        return b"\x06" + varint(len(v)) + b"".join(value(x) for x in v)
    if isinstance(v, dict):
        return b"\x07" + fields(v)
    if isinstance(v, Tensor):
        d = DTYPES.index(v.dtype)
        elem = [
            lambda x: struct.pack("<f", x),
            lambda x: struct.pack("<d", x),
            zigzag,
            lambda x: bytes([x]),
        ][d]
        shape = varint(len(v.shape)) + b"".join(varint(n) for n in v.shape)
        return b"\x08" + shape + varint(d) + varint(len(v.data)) + b"".join(elem(x) for x in v.data)
    raise TypeError(f"no rill value for {type(v).__name__}")


def fields(m):
    return varint(len(m)) + b"".join(text(k) + value(v) for k, v in m.items())


def record(m, key=None, event_time=0):
    """A record: key, event time (ms), fields, and no window."""
    k = b"\x00" if key is None else b"\x01" + text(key)
    return k + zigzag(event_time) + fields(m) + b"\x00"


def producer(stage, epoch):
    return text(stage) + b"\x00" + varint(epoch)  # output None: the main one


def batch(stage, epoch, first_seq, records):
    body = b"".join(record(r) for r in records)
    return HEADER + b"\x00" + producer(stage, epoch) + varint(first_seq) + varint(len(records)) + body


def end(stage, epoch, seq):
    return HEADER + b"\x01" + producer(stage, epoch) + varint(seq)


def bare_records(records):
    return HEADER + varint(len(records)) + b"".join(record(r) for r in records)


class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def byte(self):
        self.i += 1
        return self.b[self.i - 1]

    def varint(self):
        n = shift = 0
        while True:
            x = self.byte()
            n |= (x & 0x7F) << shift
            shift += 7
            if not x & 0x80:
                return n

    def zigzag(self):
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n):
        self.i += n
        if self.i > len(self.b):
            raise ValueError("truncated payload")
        return self.b[self.i - n : self.i]

    def str(self):
        return self.take(self.varint()).decode()

    def opt(self, f):
        return f() if self.byte() else None

    def value(self):
        t = self.varint()
        if t == 0:
            return None
        if t == 1:
            return bool(self.byte())
        if t == 2:
            return self.zigzag()
        if t == 3:
            return struct.unpack("<d", self.take(8))[0]
        if t == 4:
            return self.str()
        if t == 5:
            return bytes(self.take(self.varint()))
        if t == 6:
            return [self.value() for _ in range(self.varint())]
        if t == 7:
            return self.fields()
        if t == 8:
            shape = [self.varint() for _ in range(self.varint())]
            d = self.varint()
            elem = [
                lambda: struct.unpack("<f", self.take(4))[0],
                lambda: struct.unpack("<d", self.take(8))[0],
                self.zigzag,
                self.byte,
            ][d]
            return Tensor(DTYPES[d], shape, [elem() for _ in range(self.varint())])
        raise ValueError(f"unknown value tag {t}")

    def fields(self):
        return {self.str(): self.value() for _ in range(self.varint())}

    def record(self):
        key = self.opt(self.str)
        event_time = self.zigzag()
        f = self.fields()
        window = self.opt(lambda: (self.zigzag(), self.zigzag()))
        return key, event_time, f, window


def decode_data(payload):
    """A `DataMsg::Batch` as (first_seq, [record]); any other DataMsg
    (End, Gone, Watermark) as (None, [])."""
    if payload[:2] != HEADER:
        raise ValueError("not a rill v2 payload")
    r = Reader(payload)
    r.i = 2
    if r.varint() != 0:
        return None, []
    r.str(), r.opt(r.str), r.varint()  # producer: stage, output, epoch
    first_seq = r.varint()
    records = [r.record() for _ in range(r.varint())]
    if r.i != len(payload):
        raise ValueError(f"{len(payload) - r.i} bytes after the records")
    return first_seq, records


# -- tap and feed --------------------------------------------------------


def tap(args):
    session = open_session(args.connect)
    samples = queue.Queue()
    subs = [session.declare_subscriber(k, samples.put) for k in args.keys]
    got = 0
    deadline = time.monotonic() + args.timeout
    while got < args.count:
        try:
            s = samples.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            print(f"tap: timed out with {got} records", file=sys.stderr)
            return 1
        key, payload = str(s.key_expr), s.payload.to_bytes()
        if payload[:1] == HEADER[:1]:
            first_seq, records = decode_data(payload)
            lines = [("rill", first_seq + i, r[2]) for i, r in enumerate(records)]
        else:
            lines = [("json", None, json.loads(payload))]
        for encoding, seq, f in lines:
            print(json.dumps({"key_expr": key, "encoding": encoding, "seq": seq, "fields": to_json(f)}))
            got += 1
    sys.stdout.flush()
    for sub in subs:
        sub.undeclare()
    session.close()
    return 0


def wait_until(what, cond, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            print(f"feed: timed out waiting for {what}", file=sys.stderr)
            return False
        time.sleep(0.02)
    return True


def feed(args):
    rows = [json.loads(line) for line in sys.stdin if line.strip()]
    session = open_session(args.connect)
    block = zenoh.CongestionControl.BLOCK  # the default, DROP, may lose messages
    pubs = []
    if args.json_key:
        p = session.declare_publisher(args.json_key, encoding=zenoh.Encoding.APPLICATION_JSON, congestion_control=block)
        pubs.append((p, [json.dumps(r) for r in rows]))
    if args.rill_key:
        p = session.declare_publisher(args.rill_key, congestion_control=block)
        values = [from_json(r) for r in rows]
        half = len(values) // 2
        epoch = random.getrandbits(64)
        pubs.append((p, [
            batch("python", epoch, 0, values[:half]),
            bare_records(values[half:]),
            end("python", epoch, len(values)),
        ]))
    # plain pub/sub keeps nothing for a subscriber that is not there yet
    for p, _ in pubs:
        if not wait_until(f"a subscriber on {p.key_expr}", lambda: p.matching_status.matching, args.timeout):
            return 1
    for p, payloads in pubs:
        for payload in payloads:
            p.put(payload)
    # stay connected until the reader has taken them and gone
    for p, _ in pubs:
        if not wait_until(f"the subscriber on {p.key_expr} to go", lambda: not p.matching_status.matching, args.timeout):
            return 1
    session.close()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tap")
    t.add_argument("keys", nargs="+")
    t.add_argument("--count", type=int, required=True)
    f = sub.add_parser("feed")
    f.add_argument("--json-key")
    f.add_argument("--rill-key")
    for p in (t, f):
        p.add_argument("--connect", action="append", required=True)
        p.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    sys.exit(tap(args) if args.cmd == "tap" else feed(args))


if __name__ == "__main__":
    main()
