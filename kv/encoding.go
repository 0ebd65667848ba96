package kv

import (
	"encoding/binary"
	"fmt"
)

// Version is the kv command encoding version. Commands live in the Raft log
// forever, so older versions stay decodable after an upgrade.
const Version byte = 1

// Op is a command or query operation code. Values are stable.
type Op uint8

// Commands (proposed through the log) and queries (read-only).
const (
	OpSet           Op = 1
	OpDelete        Op = 2
	OpCompareAndSet Op = 3
	OpIncr          Op = 4
	OpWatch         Op = 5
	OpUnwatch       Op = 6

	OpGet   Op = 0x81
	OpStats Op = 0x82
)

// String returns the operation's name.
func (o Op) String() string {
	switch o {
	case OpSet:
		return "set"
	case OpDelete:
		return "delete"
	case OpCompareAndSet:
		return "cas"
	case OpIncr:
		return "incr"
	case OpWatch:
		return "watch"
	case OpUnwatch:
		return "unwatch"
	case OpGet:
		return "get"
	case OpStats:
		return "stats"
	default:
		return fmt.Sprintf("Op(%d)", uint8(o))
	}
}

// Each command is: version (1 byte) | op (1 byte) | fields, where strings and
// byte strings are a uvarint length followed by the bytes and integers are
// 8 bytes big-endian.

func header(op Op, n int) []byte {
	b := make([]byte, 0, 2+n)
	return append(b, Version, byte(op))
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBlob(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// EncodeSet encodes "set key to value". Result: the new revision
// (DecodeRevision).
func EncodeSet(key string, value []byte) []byte {
	return appendBlob(appendStr(header(OpSet, len(key)+len(value)+8), key), value)
}

// EncodeDelete encodes "delete key". Result: the new revision; ErrNotFound if
// the key has no value.
func EncodeDelete(key string) []byte {
	return appendStr(header(OpDelete, len(key)+4), key)
}

// EncodeCompareAndSet encodes "set key to value if its value is expected".
// Result: the new revision; ErrNotFound or ErrMismatch otherwise.
func EncodeCompareAndSet(key string, expected, value []byte) []byte {
	b := appendStr(header(OpCompareAndSet, len(key)+len(expected)+len(value)+12), key)
	return appendBlob(appendBlob(b, expected), value)
}

// EncodeIncr encodes "add delta to the decimal integer at key" (a missing key
// counts as 0). Result: the new value (DecodeIncrResult).
func EncodeIncr(key string, delta int64) []byte {
	b := appendStr(header(OpIncr, len(key)+12), key)
	return binary.BigEndian.AppendUint64(b, uint64(delta))
}

// EncodeWatch encodes "notify my session of every change of key". If the key
// has a value, a notification with it is sent first. Result: empty.
func EncodeWatch(key string) []byte {
	return appendStr(header(OpWatch, len(key)+4), key)
}

// EncodeUnwatch encodes "stop notifying my session about key". Result: empty.
func EncodeUnwatch(key string) []byte {
	return appendStr(header(OpUnwatch, len(key)+4), key)
}

// EncodeGet encodes the query "value of key". Result: DecodeGetResult;
// ErrNotFound if the key has no value.
func EncodeGet(key string) []byte {
	return appendStr(header(OpGet, len(key)+4), key)
}

// EncodeStats encodes the query for store counters. Result: DecodeStats.
func EncodeStats() []byte { return header(OpStats, 0) }

// The result encodings (docs/kv.md §5). The store builds its results with
// these, and the golden tests check them against the documented bytes.

func encodeIncrResult(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func encodeGetResult(value []byte, revision uint64) []byte {
	out := make([]byte, 8, 8+len(value))
	binary.BigEndian.PutUint64(out, revision)
	return append(out, value...)
}

func encodeStats(st Stats) []byte {
	out := make([]byte, 0, 32)
	out = binary.BigEndian.AppendUint64(out, st.Keys)
	out = binary.BigEndian.AppendUint64(out, st.Watches)
	out = binary.BigEndian.AppendUint64(out, st.Revision)
	return binary.BigEndian.AppendUint64(out, st.CancelledWatches)
}

// DecodeRevision decodes the result of set, delete and compare-and-set: the
// store's revision after the change.
func DecodeRevision(result []byte) (uint64, error) {
	if len(result) != 8 {
		return 0, wrap(ErrMalformed, "revision result of %d bytes", len(result))
	}
	return binary.BigEndian.Uint64(result), nil
}

// DecodeIncrResult decodes the result of incr: the new value.
func DecodeIncrResult(result []byte) (int64, error) {
	if len(result) != 8 {
		return 0, wrap(ErrMalformed, "incr result of %d bytes", len(result))
	}
	return int64(binary.BigEndian.Uint64(result)), nil
}

// DecodeGetResult decodes the result of get: the value and the revision at
// which the key last changed. value aliases result.
func DecodeGetResult(result []byte) (value []byte, revision uint64, err error) {
	if len(result) < 8 {
		return nil, 0, wrap(ErrMalformed, "get result of %d bytes", len(result))
	}
	return result[8:], binary.BigEndian.Uint64(result), nil
}

// Stats are the store's counters.
type Stats struct {
	Keys     uint64
	Watches  uint64 // (session, key) subscriptions
	Revision uint64 // number of changes applied since the store was created
	// CancelledWatches counts watches cancelled because the watching
	// session's notification queue was full.
	CancelledWatches uint64
}

// DecodeStats decodes the result of the stats query.
func DecodeStats(result []byte) (Stats, error) {
	if len(result) != 32 {
		return Stats{}, wrap(ErrMalformed, "stats result of %d bytes", len(result))
	}
	return Stats{
		Keys:             binary.BigEndian.Uint64(result),
		Watches:          binary.BigEndian.Uint64(result[8:]),
		Revision:         binary.BigEndian.Uint64(result[16:]),
		CancelledWatches: binary.BigEndian.Uint64(result[24:]),
	}, nil
}

// Notification is a change of a watched key: the payload of the leader-only
// notification (protocol.md §5.18) the store sends each watching session,
// and the Event a Watch delivers.
type Notification struct {
	Key      string
	Value    []byte // nil when Deleted
	Deleted  bool
	Revision uint64 // the store revision of the change
	// PrevRevision is the revision of the key's change before this one
	// (0 if the key had no value and was not deleted while watched). A
	// watcher whose last seen revision of the key differs missed
	// something.
	PrevRevision uint64
	// Resync is set by the client (it is not on the wire) on an event
	// that does not follow the previous one: the watch missed changes
	// and this is the key's state at Revision, no older than any change
	// it missed (docs/kv.md §6). The first event of a watch is one.
	Resync bool
}

// notification layout: kind (1 = value, 2 = deleted) | revision (8) |
// prev_revision (8) | key | value (kind 1 only).

func encodeNotification(n Notification) []byte {
	b := make([]byte, 0, 1+16+len(n.Key)+len(n.Value)+10)
	if n.Deleted {
		b = append(b, 2)
	} else {
		b = append(b, 1)
	}
	b = binary.BigEndian.AppendUint64(b, n.Revision)
	b = binary.BigEndian.AppendUint64(b, n.PrevRevision)
	b = appendStr(b, n.Key)
	if !n.Deleted {
		b = appendBlob(b, n.Value)
	}
	return b
}

// DecodeNotification decodes a notification payload sent by the kv store.
// Value aliases payload. A previous revision not below the revision is
// malformed.
func DecodeNotification(payload []byte) (Notification, error) {
	d := decoder{b: payload}
	kind := d.u8()
	n := Notification{Revision: d.u64(), PrevRevision: d.u64(), Key: string(d.blob())}
	switch kind {
	case 1:
		n.Value = d.blob()
		if n.Value == nil {
			n.Value = []byte{}
		}
	case 2:
		n.Deleted = true
	default:
		if d.err == nil {
			d.err = wrap(ErrMalformed, "notification kind %d", kind)
		}
	}
	if d.err == nil && n.PrevRevision >= n.Revision {
		d.err = wrap(ErrMalformed, "notification previous revision %d not below revision %d", n.PrevRevision, n.Revision)
	}
	if err := d.end(); err != nil {
		return Notification{}, err
	}
	return n, nil
}

// WatchResult is the result of a watch command: the key's current value if
// it has one (Exists), and Revision: the key's revision, or for a key
// without a value the previous revision its next notification will carry.
type WatchResult struct {
	Exists   bool
	Value    []byte
	Revision uint64
}

// watch result layout: revision (8) | exists (1: 0 or 1) | value (blob,
// exists = 1 only).

func encodeWatchResult(r WatchResult) []byte {
	b := make([]byte, 0, 8+1+len(r.Value)+5)
	b = binary.BigEndian.AppendUint64(b, r.Revision)
	if !r.Exists {
		return append(b, 0)
	}
	return appendBlob(append(b, 1), r.Value)
}

// DecodeWatchResult decodes the result of a watch command. Value aliases
// result.
func DecodeWatchResult(result []byte) (WatchResult, error) {
	d := decoder{b: result}
	r := WatchResult{Revision: d.u64()}
	switch e := d.u8(); {
	case d.err != nil:
	case e == 1:
		r.Exists = true
		r.Value = d.blob()
		if r.Value == nil {
			r.Value = []byte{}
		}
	case e != 0:
		d.err = wrap(ErrMalformed, "watch result exists byte %d", e)
	}
	if err := d.end(); err != nil {
		return WatchResult{}, err
	}
	return r, nil
}

// decoder reads the kv encodings; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = wrap(ErrMalformed, "%s", what)
	}
}

func (d *decoder) u8() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u64() uint64 {
	if d.err != nil || len(d.b) < 8 {
		d.fail("truncated")
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// blob returns a sub-slice of the input; its length is checked against the
// remaining input before it is used.
func (d *decoder) blob() []byte {
	if d.err != nil {
		return nil
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || (k > 1 && d.b[k-1] == 0) || n > uint64(len(d.b)-k) {
		d.fail("bad length")
		return nil
	}
	v := d.b[k : k+int(n) : k+int(n)]
	d.b = d.b[k+int(n):]
	return v
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// command is a decoded kv command or query.
type command struct {
	op       Op
	key      string
	value    []byte
	expected []byte
	delta    int64
}

// decodeCommand decodes a command or query. Byte fields alias b.
func decodeCommand(b []byte) (command, error) {
	d := decoder{b: b}
	if v := d.u8(); d.err == nil && v != Version {
		return command{}, wrap(ErrMalformed, "version %d", v)
	}
	c := command{op: Op(d.u8())}
	switch c.op {
	case OpSet:
		c.key = string(d.blob())
		c.value = d.blob()
	case OpDelete, OpWatch, OpUnwatch, OpGet:
		c.key = string(d.blob())
	case OpCompareAndSet:
		c.key = string(d.blob())
		c.expected = d.blob()
		c.value = d.blob()
	case OpIncr:
		c.key = string(d.blob())
		c.delta = int64(d.u64())
	case OpStats:
	default:
		if d.err == nil {
			return command{}, wrap(ErrMalformed, "unknown op %d", uint8(c.op))
		}
	}
	if err := d.end(); err != nil {
		return command{}, err
	}
	return c, nil
}
