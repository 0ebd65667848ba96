# A zraft kv client written from docs/protocol.md and docs/kv.md only (no Go
# source), over libzmq (pyzmq DEALER). Run by TestLibzmqKVClientFromDocs:
#   python3 kvclient.py HOST:PORT   (any member; the client follows hints)
# It prints one JSON object with what it saw.
import json, os, struct, sys, zmq

ctx = zmq.Context()

def connect(addr):
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    s.connect("tcp://" + addr)  # protocol.md §3: addresses are host:port
    return s

# protocol.md §2 and §3
def frame(kind, body): return b"ZR\x01" + bytes([kind]) + body
def u8(v): return bytes([v])
def u16(v): return struct.pack(">H", v)
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)
def blob32(b): return u32(len(b)) + b

class Reader:
    def __init__(self, b): self.b, self.i = b, 0
    def take(self, n):
        v = self.b[self.i:self.i + n]
        if len(v) != n: raise ValueError("truncated")
        self.i += n
        return v
    def u8(self): return self.take(1)[0]
    def u16(self): return struct.unpack(">H", self.take(2))[0]
    def u32(self): return struct.unpack(">I", self.take(4))[0]
    def u64(self): return struct.unpack(">Q", self.take(8))[0]
    def i64(self): return struct.unpack(">q", self.take(8))[0]
    def string(self): return self.take(self.u16()).decode()
    def bytes32(self): return self.take(self.u32())
    def hint(self): return (self.u64(), self.string())
    def uvarint(self):  # kv.md §2
        v, shift = 0, 0
        while True:
            c = self.u8()
            v |= (c & 0x7F) << shift
            if c < 0x80: return v
            shift += 7
    def blob(self): return self.take(self.uvarint())
    def rest(self): return self.take(len(self.b) - self.i)

def decode(f):
    if f[:3] != b"ZR\x01": raise ValueError("not a version 1 frame")
    kind, r = f[3], Reader(f[4:])
    if kind == 0x41:
        m = {"kind": "SessionCreated", "session": r.take(16).hex(), "nonce": r.u64(),
             "keepalive_ms": r.u32(), "timeout_ms": r.u32(), "leader": r.u64()}
        m["members"] = [(r.u64(), r.string()) for _ in range(r.u16())]
    elif kind == 0x43:
        m = {"kind": "SessionRejected", "nonce": r.u64(), "reason": r.u8(), "leader": r.hint(), "message": r.string()}
    elif kind == 0x44:
        m = {"kind": "SessionClosed", "reason": r.u8(), "leader": r.hint(), "message": r.string()}
    elif kind == 0x45:
        m = {"kind": "KeepAliveResponse", "ts": r.i64()}
    elif kind == 0x46:
        m = {"kind": "ClientResponse", "id": r.u64(), "result": r.bytes32()}
    elif kind == 0x47:
        m = {"kind": "RequestError", "id": r.u64(), "reason": r.u8(), "app_code": r.u32(), "message": r.string(), "leader": r.hint()}
    elif kind == 0x48:
        m = {"kind": "ServerRequest", "id": r.u64(), "created_at": r.i64(), "payload": r.bytes32()}
    elif kind == 0x49:
        m = {"kind": "QueryResponse", "id": r.u64(), "result": r.bytes32()}
    elif kind == 0x4A:
        m = {"kind": "QueryError", "id": r.u64(), "reason": r.u8(), "app_code": r.u32(), "message": r.string(), "leader": r.hint()}
    elif kind == 0x4B:
        m = {"kind": "Notification", "flags": r.u8(), "payload": r.bytes32()}
        if m["flags"] & ~1: raise ValueError("notification flags")
    else:
        raise ValueError("unknown kind %d" % kind)
    if r.i != len(r.b): raise ValueError("trailing bytes")
    return m

# kv.md §3 and §4
def uvarint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80]); n >>= 7
    return out + bytes([n])
def kblob(b): return uvarint(len(b)) + b
def kv_set(k, v): return b"\x01\x01" + kblob(k) + kblob(v)
def kv_get(k): return b"\x01\x81" + kblob(k)
def kv_watch(k): return b"\x01\x05" + kblob(k)

def notification(p):  # kv.md §6
    r = Reader(p)
    kind, rev, prev, key = r.u8(), r.u64(), r.u64(), r.blob()
    n = {"kind": kind, "revision": rev, "prev_revision": prev, "key": key.decode()}
    if kind == 1: n["value"] = r.blob().decode()
    if r.i != len(p): raise ValueError("trailing notification bytes")
    return n

out = {"notifications": []}
acked = 0
inbox = []

def recv(s, want):
    global acked
    for m in inbox:
        if want(m):
            inbox.remove(m); return m
    while True:
        m = decode(s.recv())
        if m["kind"] == "ServerRequest":
            if m["id"] == acked + 1:
                acked = m["id"]
            s.send(frame(0x06, u64(acked)))  # protocol.md §5.6, §8.5
            continue
        if m["kind"] == "Notification":  # protocol.md §5.18: never answered
            if m["payload"]:
                out["notifications"].append(notification(m["payload"]))
            continue
        if want(m): return m
        inbox.append(m)

# protocol.md §8.1: create the session, following the leader hint.
secret = os.urandom(32)
create = frame(0x01, u64(7) + secret + u16(0))
s = connect(sys.argv[1])
s.send(create)
m = recv(s, lambda m: m["kind"] in ("SessionCreated", "SessionRejected"))
if m["kind"] == "SessionRejected":
    out["first_answer"] = {"reason": m["reason"], "leader": m["leader"]}
    s.close()
    s = connect(m["leader"][1])
    s.send(create)  # the same nonce and secret
    m = recv(s, lambda m: m["kind"] in ("SessionCreated", "SessionRejected"))
if m["kind"] != "SessionCreated":
    print(json.dumps({"error": "no session", "answer": m["kind"]})); sys.exit(1)
out["leader"] = m["leader"]

def request(rid, payload):
    s.send(frame(0x04, u64(rid) + u64(rid) + blob32(payload)))
    return recv(s, lambda m: m["kind"] in ("ClientResponse", "RequestError") and m["id"] == rid)

def query(cid, payload):
    s.send(frame(0x05, u64(cid) + u8(0) + blob32(payload)))
    return recv(s, lambda m: m["kind"] in ("QueryResponse", "QueryError") and m["id"] == cid)

r = request(1, kv_set(b"py/k", b"hello"))
out["set_revision"] = struct.unpack(">Q", r["result"])[0]
r = query(1, kv_get(b"py/k"))
out["get"] = {"revision": struct.unpack(">Q", r["result"][:8])[0], "value": r["result"][8:].decode()}
r = query(2, kv_get(b"py/missing"))
out["get_missing"] = {"kind": r["kind"], "reason": r["reason"], "app_code": r["app_code"]}
r = request(2, kv_watch(b"py/k"))  # kv.md §5: revision, exists, value
wr = Reader(r["result"])
out["watch_result"] = {"revision": wr.u64(), "exists": wr.u8()}
out["watch_result"]["value"] = wr.blob().decode() if out["watch_result"]["exists"] else None
r = request(3, kv_set(b"py/k", b"world"))
out["set2_revision"] = struct.unpack(">Q", r["result"])[0]
s.send(frame(0x03, struct.pack(">q", 42) + u64(acked)))  # KeepAlive
while len(out["notifications"]) < 1:
    recv(s, lambda m: m["kind"] == "KeepAliveResponse")
    s.send(frame(0x03, struct.pack(">q", 43) + u64(acked)))
print(json.dumps(out))
