package fsm

import "fmt"

// Note is one leader-only notification an Application sent with
// Context.Notify: Payload for every session in Sessions. It is not
// replicated state and nothing acknowledges it (see Context.Notify).
// Sessions and Payload belong to the note: never modified after Notify
// returned, so an observer may keep them.
type Note struct {
	// Topic names what the note is about (kv: the key). A node may replace
	// a note not yet sent by a later one of the same Topic, so a recipient
	// receives the latest and must be able to tell that it skipped some
	// (kv carries the key's previous revision for that).
	Topic    string
	Sessions []SessionID
	Payload  []byte
}

// NoteObserver is an Observer that also takes the notes of one applied
// command (Context.Notify), once per log entry, after the command's
// changes are complete, on every replica. The node sends them to the
// recipients' connections when it leads and drops them otherwise. Like
// every Observer it must not block; notes and the slice are the
// machine's: the Note values (their Sessions and Payload) may be kept,
// the slice may not.
type NoteObserver interface {
	Observer
	Notes(notes []Note)
}

// Notify sends payload to sessions as a leader-only notification: not
// replicated, not queued in the machine, not acknowledged. Only the
// leader's node sends it (followers drop it), straight from the applied
// change, to each session's connection if it has one at that moment; a
// session without a connection, a connection that falls behind (the
// transport's slow-consumer rule) or a leader change loses it without a
// trace in the replicated state. Use it only for output a recipient can
// recover from the replicated state (kv watches: re-read the key); use
// Emit for work that must arrive exactly once.
//
// It changes nothing in the replicated state, so calling it is
// deterministic on every replica. sessions and payload are copied (the
// application may reuse them); sessions that are not live are skipped
// when the note is sent. It returns ErrPayloadTooLarge above
// Config.MaxServerRequestBytes, and then sends nothing.
func (c *Context) Notify(topic string, sessions []SessionID, payload []byte) error {
	if len(payload) > c.m.cfg.MaxServerRequestBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrPayloadTooLarge, len(payload), c.m.cfg.MaxServerRequestBytes)
	}
	if len(sessions) == 0 || c.m.noteObs == nil {
		return nil
	}
	c.m.notes = append(c.m.notes, Note{
		Topic:    topic,
		Sessions: append([]SessionID(nil), sessions...),
		Payload:  append([]byte{}, payload...),
	})
	return nil
}

// flushNotes hands the notes of the command just applied to the observer.
func (m *Machine) flushNotes() {
	if len(m.notes) == 0 {
		return
	}
	m.noteObs.Notes(m.notes)
	clear(m.notes)
	m.notes = m.notes[:0]
	if cap(m.notes) > 1024 {
		m.notes = nil
	}
}
