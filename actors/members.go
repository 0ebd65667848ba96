package actors

import "sync/atomic"

// Directory holds the member directory the node reads from the replicated
// state (fsm.MembersQuery): the members SessionCreated lists and leader
// hints name. The node stores a new list whenever the replicated one
// changes; actors read it on each use. Safe from any goroutine.
type Directory struct {
	p atomic.Pointer[[]Member]
}

// Store replaces the list (the caller does not modify ms afterwards).
func (d *Directory) Store(ms []Member) { d.p.Store(&ms) }

// Load returns the current list, or nil when none was stored.
func (d *Directory) Load() []Member {
	if p := d.p.Load(); p != nil {
		return *p
	}
	return nil
}

// members returns the replicated member directory once the node has one,
// else the configured members.
func (e *Env) members() []Member {
	if e.Directory != nil {
		if ms := e.Directory.Load(); len(ms) > 0 {
			return ms
		}
	}
	return e.Settings.Members
}
