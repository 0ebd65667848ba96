package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"slices"
	"time"
)

// SnapshotVersion is the snapshot format version SaveSnapshot writes.
// RecoverFromSnapshot reads every version up to it. Version 2 added the
// member directory after the tombstones.
const SnapshotVersion byte = 2

// snapshotMagic starts every snapshot so that a file of another kind is
// rejected before anything is decoded.
var snapshotMagic = [4]byte{'Z', 'F', 'S', 'M'}

// appChunkSize bounds the chunks the application's snapshot is cut into.
const appChunkSize = 64 << 10

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// SaveSnapshot writes the whole state (the machine's, then the
// application's) to w. The bytes are deterministic: sessions in id order, each
// session's entries in id order, the unassigned queue and tombstones in
// arrival order. The layout is in docs/fsm.md. SaveSnapshot is read-only.
func (m *Machine) SaveSnapshot(w io.Writer) error {
	crc := crc32.New(crcTable)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 256<<10)

	b := make([]byte, 0, 4096)
	b = append(b, snapshotMagic[:]...)
	b = append(b, SnapshotVersion)
	b = appendU64(b, uint64(m.clock))
	b = appendU64(b, m.applied)

	ids := make([]SessionID, 0, len(m.sessions))
	for id := range m.sessions {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, SessionID.Compare)
	b = appendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = m.sessions[id].appendTo(b)
		if len(b) >= 64<<10 {
			if _, err := bw.Write(b); err != nil {
				return fmt.Errorf("fsm: save snapshot: %w", err)
			}
			b = b[:0]
		}
	}
	b = appendUvarint(b, uint64(len(m.unassigned)))
	for _, q := range m.unassigned {
		b = appendU64(b, uint64(q.req.CreatedAt))
		b = appendString(b, q.selector.Name)
		b = appendString(b, q.selector.Value)
		b = appendBytes(b, q.req.Payload)
	}
	live := m.tombstones[m.tombHead:]
	b = appendUvarint(b, uint64(len(live)))
	for _, t := range live {
		b = append(b, t.id[:]...)
		b = append(b, byte(t.reason))
	}
	b = appendMembers(b, m.members)
	if _, err := bw.Write(b); err != nil {
		return fmt.Errorf("fsm: save snapshot: %w", err)
	}

	// The application's state follows as length-prefixed chunks ended by an
	// empty chunk, so it streams without being buffered whole.
	cw := &chunkWriter{w: bw}
	aw := bufio.NewWriterSize(cw, appChunkSize)
	if err := m.app.SaveSnapshot(aw); err != nil {
		return fmt.Errorf("fsm: application snapshot: %w", err)
	}
	if err := aw.Flush(); err != nil {
		return fmt.Errorf("fsm: save snapshot: %w", err)
	}
	if _, err := bw.Write([]byte{0}); err != nil {
		return fmt.Errorf("fsm: save snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("fsm: save snapshot: %w", err)
	}
	// The checksum covers everything before it and is written last.
	if _, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32())); err != nil {
		return fmt.Errorf("fsm: save snapshot: %w", err)
	}
	return nil
}

func (s *session) appendTo(b []byte) []byte {
	b = append(b, s.id[:]...)
	b = append(b, s.secretHash[:]...)
	b = appendUvarint(b, s.nonce)
	b = appendUvarint(b, uint64(len(s.caps)))
	for _, c := range s.caps {
		b = appendString(b, c.Name)
		b = appendString(b, c.Value)
	}
	b = appendU64(b, uint64(s.timeout))
	b = appendU64(b, uint64(s.openedAt))
	b = appendU64(b, uint64(s.liveness))
	b = appendUvarint(b, s.watermark)
	b = appendUvarint(b, s.nextID)
	b = appendUvarint(b, uint64(len(s.responses)))
	for _, r := range s.responses {
		b = appendUvarint(b, r.id)
		b = appendUvarint(b, r.res.Value)
		b = appendBytes(b, r.res.Data)
	}
	b = appendUvarint(b, uint64(len(s.pending)))
	for _, q := range s.pending {
		b = appendUvarint(b, q.req.ID)
		b = appendU64(b, uint64(q.req.CreatedAt))
		b = appendBytes(b, q.req.Payload)
		if q.bySelector {
			b = append(b, 1)
			b = appendString(b, q.selector.Name)
			b = appendString(b, q.selector.Value)
		} else {
			b = append(b, 0)
		}
	}
	return b
}

type chunkWriter struct {
	w   io.Writer
	hdr [binary.MaxVarintLen64]byte
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := binary.PutUvarint(c.hdr[:], uint64(len(p)))
	if _, err := c.w.Write(c.hdr[:n]); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// RecoverFromSnapshot replaces the whole state with a snapshot written by
// SaveSnapshot. The snapshot is read into memory and its checksum verified
// before anything is replaced; the machine's own state is replaced only after
// it decoded completely, then the application restores its part. An error
// stops the node (dragonboat's contract): ErrUnknownVersion for a newer
// format, ErrMalformed for damaged bytes. The Observer is not called.
func (m *Machine) RecoverFromSnapshot(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("fsm: read snapshot: %w", err)
	}
	if len(data) < len(snapshotMagic)+1+4 || !bytes.Equal(data[:4], snapshotMagic[:]) {
		return fmt.Errorf("%w: not a zraft snapshot", ErrMalformed)
	}
	if v := data[4]; v == 0 || v > SnapshotVersion {
		return fmt.Errorf("%w: snapshot version %d (this binary knows 1..%d)", ErrUnknownVersion, v, SnapshotVersion)
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return fmt.Errorf("%w: snapshot checksum mismatch", ErrMalformed)
	}
	rd := reader{b: body[5:], payloads: newInterner()}
	fresh := &Machine{app: m.app, obs: m.obs, cfg: m.cfg}
	fresh.reset()
	fresh.clock = ClusterTime(rd.u64())
	fresh.applied = rd.u64()
	n := rd.count(len(rd.b) / 64)
	var prev SessionID
	for i := 0; i < n && rd.err == nil; i++ {
		s := readSession(&rd)
		if rd.err != nil {
			break
		}
		if i > 0 && s.id.Compare(prev) <= 0 {
			rd.fail("sessions out of order")
			break
		}
		prev = s.id
		fresh.insertSession(s)
	}
	nu := rd.count(len(rd.b) / 10)
	for i := 0; i < nu && rd.err == nil; i++ {
		q := queued{bySelector: true}
		q.req.CreatedAt = ClusterTime(rd.u64())
		q.selector.Name = rd.string(len(rd.b))
		q.selector.Value = rd.string(len(rd.b))
		q.req.Payload = rd.payloads.copyOf(rd.bytes(len(rd.b)))
		fresh.unassigned = append(fresh.unassigned, q)
	}
	nt := rd.count(len(rd.b) / 17)
	for i := 0; i < nt && rd.err == nil; i++ {
		var t tombstone
		rd.fixed(t.id[:])
		t.reason = RemoveReason(rd.u8())
		fresh.tombstones = append(fresh.tombstones, t)
		fresh.tombIndex[t.id] = t.reason
	}
	if data[4] >= 2 {
		fresh.members = readMembers(&rd)
		if msg := validateMembers(fresh.members); msg != "" && rd.err == nil {
			rd.fail("%s", msg)
		}
	}
	if rd.err != nil {
		return fmt.Errorf("fsm: restore snapshot: %w", rd.err)
	}
	cr := &chunkReader{r: &rd}
	if err := m.app.RecoverFromSnapshot(cr); err != nil {
		return fmt.Errorf("fsm: restore application snapshot: %w", err)
	}
	// Skip whatever the application did not read, then require the end.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return fmt.Errorf("fsm: restore snapshot: %w", err)
	}
	if err := rd.done(); err != nil {
		return fmt.Errorf("fsm: restore snapshot: %w", err)
	}
	m.clock, m.applied = fresh.clock, fresh.applied
	m.sessions, m.byOpenKey, m.capable = fresh.sessions, fresh.byOpenKey, fresh.capable
	m.unassigned = fresh.unassigned
	m.tombstones, m.tombHead, m.tombIndex = fresh.tombstones, 0, fresh.tombIndex
	m.cachedTotal, m.pendingTotal = fresh.cachedTotal, fresh.pendingTotal
	m.members = fresh.members
	return nil
}

func readSession(rd *reader) *session {
	s := &session{}
	rd.fixed(s.id[:])
	rd.fixed(s.secretHash[:])
	s.nonce = rd.uvarint()
	if nc := rd.count(len(rd.b) / 2); nc > 0 {
		s.caps = make([]Capability, nc)
		for i := range s.caps {
			s.caps[i].Name = rd.string(len(rd.b))
			s.caps[i].Value = rd.string(len(rd.b))
		}
	}
	s.timeout = time.Duration(rd.u64())
	s.openedAt = ClusterTime(rd.u64())
	s.liveness = ClusterTime(rd.u64())
	s.watermark = rd.uvarint()
	s.nextID = rd.uvarint()
	if nr := rd.count(len(rd.b) / 3); nr > 0 {
		s.responses = make([]cached, nr)
		for i := range s.responses {
			s.responses[i].id = rd.uvarint()
			s.responses[i].res.Value = rd.uvarint()
			if d := rd.bytes(len(rd.b)); len(d) > 0 {
				s.responses[i].res.Data = bytes.Clone(d)
			}
		}
	}
	if np := rd.count(len(rd.b) / 11); np > 0 {
		s.pending = make([]queued, np)
		for i := range s.pending {
			q := &s.pending[i]
			q.req.ID = rd.uvarint()
			q.req.CreatedAt = ClusterTime(rd.u64())
			q.req.Payload = rd.payloads.copyOf(rd.bytes(len(rd.b)))
			switch rd.u8() {
			case 0:
			case 1:
				q.bySelector = true
				q.selector.Name = rd.string(len(rd.b))
				q.selector.Value = rd.string(len(rd.b))
			default:
				rd.fail("bad target flag")
			}
		}
	}
	return s
}

// chunkReader yields the application's chunks and then io.EOF once the empty
// terminating chunk is read.
type chunkReader struct {
	r    *reader
	left []byte
	eof  bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.left) == 0 {
		if c.eof {
			return 0, io.EOF
		}
		chunk := c.r.bytes(len(c.r.b))
		if c.r.err != nil {
			return 0, c.r.err
		}
		if len(chunk) == 0 {
			c.eof = true
			return 0, io.EOF
		}
		c.left = chunk
	}
	n := copy(p, c.left)
	c.left = c.left[n:]
	return n, nil
}

// Hash returns a 64-bit FNV-1a hash of the snapshot bytes: equal state gives
// equal hashes on every replica, and any difference in sessions, caches,
// queues, clock or application state changes it (barring collisions). It
// costs a full snapshot, so it is for tests and audits.
func (m *Machine) Hash() (uint64, error) {
	h := fnv.New64a()
	if err := m.SaveSnapshot(h); err != nil {
		return 0, err
	}
	return h.Sum64(), nil
}
