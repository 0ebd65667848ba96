// notify: leader-only notifications (fsm.Context.Notify), sent straight to
// the recipients' connections.
//
// Owns: the note box, the relay from the state machine's Observer (on
// dragonboat's apply goroutine) to the session directory, which writes one
// Notification frame per connected recipient itself: one actor message for
// a whole fan-out, no per-recipient actor hop, no acknowledgement, nothing
// proposed. Followers drop notes at the observer.
//
// The box coalesces: while the directory has not taken the box, a note
// replaces the waiting note of the same topic (kv: key), so a hot key costs
// the directory at most one fan-out per turn however fast it is written,
// and recipients see the latest change (and can tell what they skipped from
// the payload). While the directory is still sending the notes it took,
// it leaves the box alone, so they keep coalescing there: the directory
// holds at most one box's worth. The box holds at most MaxNoteTopics topics; past that a
// note is dropped and every bound connection is later sent one Notification
// with the lost flag, so its client re-synchronises. The directory sends at
// most noteChunk frames per message it handles and then posts itself the
// rest, so that other sessions' messages in its mailbox are not held behind
// a large fan-out.
package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

// MaxNoteTopics bounds the distinct topics waiting in the note box.
const MaxNoteTopics = 4096

// MaxNoteBytes bounds the bytes of the notes waiting in the box (payloads,
// topics and recipient lists); the directory holds at most one more box's
// worth while it sends, so notes hold at most twice this. Past it a note is
// dropped as past MaxNoteTopics: every bound connection is sent the lost
// flag and its client re-synchronises.
const MaxNoteBytes = 16 << 20

// noteSize is what a note holds in memory, for MaxNoteBytes.
func noteSize(n fsm.Note) int {
	return len(n.Topic) + len(n.Payload) + len(n.Sessions)*len(fsm.SessionID{})
}

// noteChunk is how many frames the directory sends for notes per message
// it handles before it lets the rest of its mailbox go first.
const noteChunk = 512

// noteRepost is how long a posted box may stay untaken before the observer
// posts it again (its message may have been lost to a directory restart
// that dropped the message being handled).
const noteRepost = time.Second

// noteBox carries notes from the apply goroutine to the directory.
type noteBox struct {
	mu       sync.Mutex
	byTopic  map[string]int
	list     []fsm.Note
	bytes    int // noteSize of list
	lost     bool
	posted   bool
	postedAt time.Time
	// counters, read by tests and the benchmark
	coalesced, dropped uint64
}

// notesReady tells the directory that the box has notes to send.
type notesReady struct{ box *noteBox }

// notesMore tells the directory to send the next chunk of the notes it took.
type notesMore struct{}

// put adds notes to the box and reports whether the box must be posted.
func (b *noteBox) put(list []fsm.Note, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byTopic == nil {
		b.byTopic = make(map[string]int)
	}
	for _, n := range list {
		size := noteSize(n)
		if i, ok := b.byTopic[n.Topic]; ok {
			if b.bytes-noteSize(b.list[i])+size > MaxNoteBytes {
				b.lost = true
				b.dropped++
				continue
			}
			b.bytes += size - noteSize(b.list[i])
			b.list[i] = n
			b.coalesced++
			continue
		}
		if len(b.list) >= MaxNoteTopics || b.bytes+size > MaxNoteBytes {
			b.lost = true
			b.dropped++
			continue
		}
		b.byTopic[n.Topic] = len(b.list)
		b.list = append(b.list, n)
		b.bytes += size
	}
	if b.posted && now.Sub(b.postedAt) < noteRepost {
		return false
	}
	b.posted, b.postedAt = true, now
	return true
}

// take empties the box.
func (b *noteBox) take() (list []fsm.Note, lost bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	list, lost = b.list, b.lost
	b.list, b.lost, b.posted, b.bytes = nil, false, false, 0
	clear(b.byTopic)
	return list, lost
}

// NoteStats reports how many notes were replaced by a later one of the same
// topic before they were sent, and how many were dropped because the box
// was full.
func (o *Observer) NoteStats() (coalesced, dropped uint64) {
	o.notes.mu.Lock()
	defer o.notes.mu.Unlock()
	return o.notes.coalesced, o.notes.dropped
}

// SetLeader tells the observer whether this node leads, and which actor
// owns the connections: notes are relayed only while it leads. The
// dispatcher calls it on every leader change.
func (o *Observer) SetLeader(leader bool, directory *actor.PID) {
	if directory != nil {
		o.directory.Store(directory)
	}
	o.leader.Store(leader)
}

// Notes implements fsm.NoteObserver: on the leader the notes go into the
// box, and the directory is told once per box.
func (o *Observer) Notes(list []fsm.Note) {
	dir := o.directory.Load()
	if !o.leader.Load() || dir == nil {
		return
	}
	if o.notes.put(list, time.Now()) {
		o.root.Send(dir, &notesReady{box: &o.notes})
	}
}

// noteCursor is the directory's place in the notes it took from the box.
type noteCursor struct {
	list    []fsm.Note
	note    int // index in list
	next    int // index in list[note].Sessions
	frame   []byte
	pending bool // a notesMore is posted
	// box is a box that said it has notes while the directory was still
	// sending the previous ones: it is taken when those are sent, so that
	// notes keep coalescing in the box meanwhile and the directory holds
	// at most one box's worth.
	box *noteBox
}

// takeNotes handles notesReady: unless the notes taken before are still
// being sent, it takes the box and sends a lost marker first, then the
// notes.
func (d *directory) takeNotes(c actor.Context, m *notesReady) {
	if !d.leader.IsLeader {
		m.box.take()
		return
	}
	if d.notes.note < len(d.notes.list) {
		d.notes.box = m.box
		return
	}
	list, lost := m.box.take()
	if lost {
		frame, err := codec.Append(nil, &codec.Notification{Flags: codec.NotificationLost}, &d.env.Settings.Limits)
		if err == nil {
			for conn := range d.byConn {
				d.sendNote(conn, frame)
			}
		}
	}
	if len(list) == 0 {
		return
	}
	d.notes.list = append(d.notes.list, list...)
	d.sendNotes(c)
}

// sendNotes sends up to noteChunk frames of the notes taken and posts
// notesMore for the rest.
func (d *directory) sendNotes(c actor.Context) {
	n := &d.notes
	budget := noteChunk
	for n.note < len(n.list) && budget > 0 {
		note := &n.list[n.note]
		if n.frame == nil {
			frame, err := codec.Append(nil, &codec.Notification{Payload: note.Payload}, &d.env.Settings.Limits)
			if err != nil {
				d.env.Log.Error("encode notification", "err", err)
				d.env.Metrics.EncodeErrors.Inc()
				n.note++
				continue
			}
			n.frame = frame
		}
		for n.next < len(note.Sessions) && budget > 0 {
			if e := d.bySession[note.Sessions[n.next]]; e != nil && e.conn != 0 {
				// One frame shared by every recipient: the transport
				// does not modify frames it is given.
				d.sendNote(e.conn, n.frame)
				budget--
			}
			n.next++
		}
		if n.next == len(note.Sessions) {
			n.list[n.note] = fsm.Note{}
			n.note, n.next, n.frame = n.note+1, 0, nil
		}
	}
	if n.note == len(n.list) {
		clear(n.list)
		n.list, n.note = n.list[:0], 0
		if cap(n.list) > MaxNoteTopics {
			n.list = nil
		}
		if box := n.box; box != nil {
			// Taken after the rest of the mailbox, like a chunk.
			n.box = nil
			c.Send(c.Self(), &notesReady{box: box})
		}
		return
	}
	if !n.pending {
		n.pending = true
		c.Send(c.Self(), &notesMore{})
	}
}

// sendNote writes one Notification frame: on the directory's goroutine,
// with one non-blocking write, when the watcher's connection is idle
// (NowSender), so that a fan-out starts no writer goroutine per recipient.
// A full send queue closes the connection (the transport's slow-consumer
// rule); its client continues the session and re-synchronises.
func (d *directory) sendNote(conn ConnID, frame []byte) {
	send := d.env.Conns.Send
	if ns, ok := d.env.Conns.(NowSender); ok {
		send = ns.SendNow
	}
	if err := send(conn, frame); err == nil {
		d.env.Metrics.MessagesOut.WithLabelValues("Notification").Inc()
	}
}

// moreNotes handles notesMore.
func (d *directory) moreNotes(c actor.Context) {
	d.notes.pending = false
	if !d.leader.IsLeader {
		if d.notes.box != nil {
			d.notes.box.take()
		}
		d.notes = noteCursor{}
		return
	}
	d.sendNotes(c)
}
