package actors

import "testing"

// A session's backlog holds its frames' bytes of the node's budget until
// the actor handles them; closing it (the directory forgot the session, or
// stopped with it) gives back what the dropped mailbox held, and a late
// done changes nothing, so the budget neither leaks nor goes negative.
func TestBacklogReleasesWhatAStoppedMailboxHeld(t *testing.T) {
	node := NewByteBudget(1000)
	a, b := newBacklog(node), newBacklog(node)
	for range 3 {
		if r := a.add(200, 10, 700); r != "" {
			t.Fatalf("add within the bounds: %q", r)
		}
	}
	if r := a.add(200, 10, 700); r != "session_bytes" {
		t.Fatalf("add past the session's bytes = %q, want session_bytes", r)
	}
	if r := b.add(300, 10, 0); r != "" {
		t.Fatalf("another session's add: %q", r)
	}
	if r := b.add(200, 10, 0); r != "node_bytes" {
		t.Fatalf("add past the node's bytes = %q, want node_bytes", r)
	}
	if r := b.add(1, 1, 0); r != "backlog" {
		t.Fatalf("add past the message bound = %q, want backlog", r)
	}
	a.done(200)
	if node.Used() != 700 {
		t.Fatalf("node holds %d after one done, want 700", node.Used())
	}
	a.close()
	a.done(200) // a message the stopped actor handled after all
	if node.Used() != 300 {
		t.Fatalf("node holds %d after closing a, want b's 300", node.Used())
	}
	if r := a.add(1, 10, 0); r == "" {
		t.Fatal("a closed backlog admitted a message")
	}
	b.close()
	if node.Used() != 0 {
		t.Fatalf("node holds %d with every backlog closed", node.Used())
	}
}
