package node

import (
	"github.com/zraft/zraft/actors"
	"github.com/zraft/zraft/transport"
)

// MemoryTerm is one term of the worst-case memory a node holds for its
// clients and its replicated state (docs/operations.md, "Memory and hostile
// load").
type MemoryTerm struct {
	What  string
	Bytes int64
}

// connFixed is what one client connection costs before any frame: its read
// and write buffers, two goroutines and its queue's slots.
const connFixed = 32 << 10

// WorstCaseMemory returns the bound docs/operations.md states for c, term
// by term, and their sum, with C = max_conns and U the 4 KiB of a frame a
// connection may hold outside max_reading_bytes
// (transport.UnbudgetedFrameBytes):
//
//	C × (32 KiB + U)                                          connections: fixed part, handshake frame or a frame's first 4 KiB
//	+ max_reading_bytes                                       frames being read, beyond their first 4 KiB
//	+ min(C × send_queue_bytes,
//	      max_queued_bytes + queue_overdraft_bytes)           replies queued
//	+ max_inbox_bytes                                         frames decoded, not yet handled
//	+ max_proposal_bytes                                      commands and queries admitted, not yet answered
//	+ quota_bytes                                             replicated application state
//	+ 2 × 16 MiB                                              notifications waiting to be sent (actors.MaxNoteBytes)
//
// No term grows with max_conns × max_frame. Not in it: dragonboat's log
// store (the small-memory configuration, about 1 GB at most), TLS record
// buffers when client TLS is on, and the state machine's own per-session
// state, which its counts bound (cached responses, pending server
// requests); see the docs. With quota_bytes 0 (no quota) the state term,
// and the total, are -1: unbounded.
func (c *Config) WorstCaseMemory() (total int64, terms []MemoryTerm) {
	conns := int64(c.MaxConns)
	terms = []MemoryTerm{
		{"connections (fixed part, and a handshake frame or a frame's first 4 KiB)", conns * (connFixed + transport.UnbudgetedFrameBytes)},
		{"frames being read beyond their first 4 KiB (max_reading_bytes)", c.MaxReadingBytes},
		{"replies queued", min(conns*int64(c.SendQueueBytes), c.MaxQueuedBytes+c.QueueOverdraftBytes)},
		{"frames decoded, not yet handled (max_inbox_bytes)", c.MaxInboxBytes},
		{"commands and queries admitted, not yet answered (max_proposal_bytes)", c.MaxProposalBytes},
		{"notifications waiting to be sent (2 × actors.MaxNoteBytes)", 2 * actors.MaxNoteBytes},
		{"replicated application state (quota_bytes)", c.QuotaBytes},
	}
	if c.QuotaBytes == 0 {
		terms[len(terms)-1].Bytes = -1
		return -1, terms
	}
	for _, t := range terms {
		total += t.Bytes
	}
	return total, terms
}
