package fsm

import (
	"fmt"
	"slices"
)

// The member directory is framework state, not the application's: the
// client address (and Raft address) of every member, so that every replica
// and every client learns of a member added or removed while the cluster
// runs. The node proposes SetMembers around each Raft membership change
// and reconciles the directory with Raft's membership (docs/operations.md).

// TypeSetMembers replaces the member directory.
const TypeSetMembers CommandType = 10

// MaxMembers bounds the member directory.
const MaxMembers = 64

// maxMemberAddr bounds one address in the directory.
const maxMemberAddr = 256

// MemberRecord is one member in the directory.
type MemberRecord struct {
	ID         uint64
	RaftAddr   string
	ClientAddr string
}

// SetMembers replaces the whole member directory with Members (sorted by
// ID, ids non-zero and unique, at most MaxMembers, addresses non-empty and
// at most 256 bytes). Anything else is StatusInvalid and changes nothing.
type SetMembers struct {
	Time    ClusterTime
	Members []MemberRecord
}

// MembersQuery asks for the member directory ([]MemberRecord, by id).
type MembersQuery struct{}

// Type implements Command.
func (SetMembers) Type() CommandType { return TypeSetMembers }

// Timestamp implements Command.
func (c SetMembers) Timestamp() ClusterTime { return c.Time }

func (c SetMembers) appendFields(b []byte) []byte { return appendMembers(b, c.Members) }

func appendMembers(b []byte, ms []MemberRecord) []byte {
	b = appendUvarint(b, uint64(len(ms)))
	for _, m := range ms {
		b = appendUvarint(b, m.ID)
		b = appendString(b, m.RaftAddr)
		b = appendString(b, m.ClientAddr)
	}
	return b
}

// readMembers reads what appendMembers wrote; each record takes at least
// three bytes, which bounds the count before allocating.
func readMembers(r *reader) []MemberRecord {
	n := r.count(len(r.b) / 3)
	if n == 0 {
		return nil
	}
	ms := make([]MemberRecord, n)
	for i := range ms {
		ms[i].ID = r.uvarint()
		ms[i].RaftAddr = r.string(len(r.b))
		ms[i].ClientAddr = r.string(len(r.b))
	}
	return ms
}

func decodeSetMembers(r *reader, ts ClusterTime) Command {
	return SetMembers{Time: ts, Members: readMembers(r)}
}

// validateMembers says what is wrong with a directory, or "".
func validateMembers(ms []MemberRecord) string {
	if len(ms) > MaxMembers {
		return fmt.Sprintf("fsm: %d members, at most %d", len(ms), MaxMembers)
	}
	for i, m := range ms {
		switch {
		case m.ID == 0:
			return "fsm: member id 0"
		case i > 0 && m.ID <= ms[i-1].ID:
			return "fsm: members not sorted by unique id"
		case m.RaftAddr == "" || m.ClientAddr == "" || len(m.RaftAddr) > maxMemberAddr || len(m.ClientAddr) > maxMemberAddr:
			return fmt.Sprintf("fsm: member %d: addresses must be 1 to %d bytes", m.ID, maxMemberAddr)
		}
	}
	return ""
}

func (m *Machine) setMembers(c SetMembers) Result {
	if msg := validateMembers(c.Members); msg != "" {
		return m.invalid(msg)
	}
	m.members = slices.Clone(c.Members)
	return statusResult(StatusOK)
}

// Members returns a copy of the member directory, by id.
func (m *Machine) Members() []MemberRecord { return slices.Clone(m.members) }
