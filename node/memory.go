package node

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
// by term, and their sum:
//
//	max_conns × (32 KiB + max_frame)                          connections, frames being read
//	+ min(max_conns × send_queue_bytes,
//	      max_queued_bytes + max_conns × max_frame)           replies queued
//	+ max_inbox_bytes                                         frames decoded, not yet handled
//	+ max_proposal_bytes                                      commands and queries admitted, not yet answered
//	+ quota_bytes                                             replicated application state
//
// Not in it: dragonboat's log store (the small-memory configuration, about
// 1 GB at most), and the state machine's own per-session state, which its
// counts bound (cached responses, pending server requests); see the docs.
// With quota_bytes 0 (no quota) the state term, and the total, are -1:
// unbounded.
func (c *Config) WorstCaseMemory() (total int64, terms []MemoryTerm) {
	conns, frame := int64(c.MaxConns), int64(c.MaxFrame)
	terms = []MemoryTerm{
		{"connections (fixed part)", conns * connFixed},
		{"frames being read", conns * frame},
		{"replies queued", min(conns*int64(c.SendQueueBytes), c.MaxQueuedBytes+conns*frame)},
		{"frames decoded, not yet handled (max_inbox_bytes)", c.MaxInboxBytes},
		{"commands and queries admitted, not yet answered (max_proposal_bytes)", c.MaxProposalBytes},
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
