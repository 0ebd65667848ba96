package fsm

import (
	"bytes"
	"hash/maphash"
)

// Server request payloads are immutable once queued, so one copy can back
// the queue entries of many sessions: a notification fanned out to a
// thousand watchers is held once, not a thousand times (each recipient
// costs its queue entry, about 80 bytes). Sharing changes no replicated
// state, only where the bytes live, so it is invisible to determinism and
// to snapshots (which write every entry's payload out in full).

// share returns the machine's copy of an emitted payload: the copy made for
// the previous emit when the bytes are equal (one write emitting the same
// notification to every watcher), else a fresh copy, which becomes the one
// to compare with next. An empty payload is nil.
func (m *Machine) share(payload []byte) []byte {
	if len(payload) == 0 {
		return nil
	}
	if m.lastEmit != nil && bytes.Equal(payload, m.lastEmit) {
		return m.lastEmit
	}
	p := bytes.Clone(payload)
	m.lastEmit = p
	return p
}

// maxInterned bounds the distinct payloads an interner remembers; past it
// payloads are copied without sharing.
const maxInterned = 1 << 16

// interner shares equal payloads while a snapshot is read back, so that a
// restored machine holds fanned-out work once, as the machine that wrote the
// snapshot did. It lives for one RecoverFromSnapshot.
type interner struct {
	seed  maphash.Seed
	bySum map[uint64][]byte
}

func newInterner() *interner {
	return &interner{seed: maphash.MakeSeed(), bySum: make(map[uint64][]byte)}
}

// copyOf returns a copy of b, shared with an earlier equal one if any.
func (in *interner) copyOf(b []byte) []byte {
	if in == nil || len(b) == 0 {
		return bytes.Clone(b)
	}
	sum := maphash.Bytes(in.seed, b)
	if p, ok := in.bySum[sum]; ok && bytes.Equal(p, b) {
		return p
	}
	p := bytes.Clone(b)
	if len(in.bySum) < maxInterned {
		in.bySum[sum] = p
	}
	return p
}
