package fsm

import "time"

// ClusterTime is a point on the cluster's clock, in Unix nanoseconds. It is
// read only from the replicated state: every command carries the proposing
// leader's stamp, and the machine's cluster time is the largest stamp applied
// so far, so it never moves backwards, and every replica agrees on it at
// every log index. Its pace is the pace of whichever leader's clock stamped
// most recently; after a leader whose clock was ahead it stalls, after one
// that was behind it may jump. So a span of cluster time only measures how
// far the cluster's own clock moved, and a ClusterTime is never compared with
// a node's local clock: the only way from a local time.Time into cluster time
// is Stamp, which a leader uses to stamp its proposals, and there is no way
// back.
type ClusterTime int64

// Stamp is the one conversion from a node's local clock to cluster time: the
// stamp a leader puts on a command it proposes.
func Stamp(local time.Time) ClusterTime { return ClusterTime(local.UnixNano()) }

// Sub returns how far the cluster clock moved from u to t (negative when u
// is later).
func (t ClusterTime) Sub(u ClusterTime) time.Duration { return time.Duration(t - u) }

// Add returns t moved by d.
func (t ClusterTime) Add(d time.Duration) ClusterTime { return t + ClusterTime(d) }

// After reports whether t is later than u.
func (t ClusterTime) After(u ClusterTime) bool { return t > u }

// Before reports whether t is earlier than u.
func (t ClusterTime) Before(u ClusterTime) bool { return t < u }

// UnixNano returns t as Unix nanoseconds, for encodings and displays that
// carry it as a plain integer (the wire protocol's created_at, the HTTP API).
func (t ClusterTime) UnixNano() int64 { return int64(t) }

// String formats t as an RFC 3339 UTC time with nanoseconds; it is for logs,
// and says nothing about any node's clock.
func (t ClusterTime) String() string {
	return time.Unix(0, int64(t)).UTC().Format(time.RFC3339Nano)
}
