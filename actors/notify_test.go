package actors

import (
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

// frameConns is a Conns that records the frames sent to each connection.
type frameConns struct {
	mu     sync.Mutex
	frames map[ConnID][][]byte
	total  int
}

func (f *frameConns) Send(conn ConnID, frame []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frames[conn] = append(f.frames[conn], frame)
	f.total++
	return nil
}
func (f *frameConns) CloseConn(ConnID) error { return nil }

func (f *frameConns) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total
}

func (f *frameConns) notes(t *testing.T, conn ConnID) []*codec.Notification {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*codec.Notification
	for _, fr := range f.frames[conn] {
		m, err := codec.Decode(fr, nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.(*codec.Notification))
	}
	return out
}

// noteDirectory runs the directory's note handling (takeNotes, moreNotes)
// in an actor of its own, with sessions bound as given, so the test sees
// exactly what the directory sends.
func noteDirectory(t *testing.T, sys *actor.ActorSystem, leader bool, bound map[fsm.SessionID]ConnID, unbound []fsm.SessionID) (*actor.PID, *frameConns) {
	t.Helper()
	conns := &frameConns{frames: make(map[ConnID][][]byte)}
	env := &Env{
		Settings: Settings{NodeID: 1, Limits: codec.DefaultLimits()},
		Conns:    conns,
		Metrics:  NewMetrics(nil),
		Log:      slog.New(slog.DiscardHandler),
		Now:      time.Now,
	}
	d := &directory{env: env, byConn: make(map[ConnID]fsm.SessionID), bySession: make(map[fsm.SessionID]*entry),
		leader: LeaderChanged{LeaderID: 1, IsLeader: leader}}
	for id, conn := range bound {
		d.bySession[id] = &entry{conn: conn}
		d.byConn[conn] = id
	}
	for _, id := range unbound {
		d.bySession[id] = &entry{}
	}
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		switch m := c.Message().(type) {
		case *notesReady:
			d.takeNotes(c, m)
		case *notesMore:
			d.moreNotes(c)
		}
	}))
	return pid, conns
}

func waitFrames(t *testing.T, conns *frameConns, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for conns.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d frames sent, want %d", conns.count(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNotesSentOncePerConnectedRecipientLatestPerTopic: a note waiting in
// the box is replaced by a later one of the same topic; the directory
// sends one Notification frame per recipient that has a connection (the
// same bytes to all), nothing to an unbound session, and nothing is
// acknowledged or proposed.
func TestNotesSentOncePerConnectedRecipientLatestPerTopic(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	s1, s2, s3 := fsm.SessionID{15: 1}, fsm.SessionID{15: 2}, fsm.SessionID{15: 3}
	pid, conns := noteDirectory(t, sys, true, map[fsm.SessionID]ConnID{s1: 11, s2: 12}, []fsm.SessionID{s3})
	obs := NewObserver(sys, nil, 100)
	obs.SetLeader(true, pid)
	// Filled directly, so that the directory cannot take the box between
	// the two notes of topic k.
	all := []fsm.SessionID{s1, s2, s3}
	obs.notes.put([]fsm.Note{{Topic: "k", Sessions: all, Payload: []byte("v1")}}, time.Now())
	obs.notes.put([]fsm.Note{{Topic: "k", Sessions: all, Payload: []byte("v2")}, {Topic: "j", Sessions: []fsm.SessionID{s2}, Payload: []byte("j1")}}, time.Now())
	sys.Root.Send(pid, &notesReady{box: &obs.notes})
	waitFrames(t, conns, 3)
	time.Sleep(20 * time.Millisecond) // nothing more may come
	if n := conns.count(); n != 3 {
		t.Fatalf("%d frames, want 3", n)
	}
	if got := conns.notes(t, 11); len(got) != 1 || string(got[0].Payload) != "v2" || got[0].Flags != 0 {
		t.Fatalf("conn 11: %+v", got)
	}
	if got := conns.notes(t, 12); len(got) != 2 || string(got[0].Payload) != "v2" || string(got[1].Payload) != "j1" {
		t.Fatalf("conn 12: %+v", got)
	}
	if c, d := obs.NoteStats(); c != 1 || d != 0 {
		t.Fatalf("coalesced %d dropped %d, want 1 and 0", c, d)
	}
	// Through the observer: one message for a fan-out.
	obs.Notes([]fsm.Note{{Topic: "k", Sessions: all, Payload: []byte("v3")}})
	waitFrames(t, conns, 5)
	if got := conns.notes(t, 11); len(got) != 2 || string(got[1].Payload) != "v3" {
		t.Fatalf("conn 11 after v3: %+v", got)
	}
}

// TestNotesOnFollowerGoNowhere: a follower's observer keeps nothing and
// posts nothing, and a directory that no longer leads sends nothing.
func TestNotesOnFollowerGoNowhere(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	s1 := fsm.SessionID{15: 1}
	pid, conns := noteDirectory(t, sys, false, map[fsm.SessionID]ConnID{s1: 11}, nil)
	obs := NewObserver(sys, nil, 100)
	obs.SetLeader(false, pid)
	obs.Notes([]fsm.Note{{Topic: "k", Sessions: []fsm.SessionID{s1}, Payload: []byte("v")}})
	obs.notes.mu.Lock()
	kept, posted := len(obs.notes.list), obs.notes.posted
	obs.notes.mu.Unlock()
	if kept != 0 || posted {
		t.Fatalf("follower kept %d notes, posted %v", kept, posted)
	}
	// Even handed notes, a directory that does not lead sends none.
	obs.notes.put([]fsm.Note{{Topic: "k", Sessions: []fsm.SessionID{s1}, Payload: []byte("v")}}, time.Now())
	sys.Root.Send(pid, &notesReady{box: &obs.notes})
	probe := make(chan struct{})
	sys.Root.Send(pid, &notesMore{})
	go func() { time.Sleep(50 * time.Millisecond); close(probe) }()
	<-probe
	if n := conns.count(); n != 0 {
		t.Fatalf("follower sent %d frames", n)
	}
}

// TestNotesOverflowSendsLostMarker: past MaxNoteTopics distinct topics a
// note is dropped, and every bound connection is sent one Notification
// with the lost flag before the notes kept; a fan-out larger than one
// chunk is sent whole, in chunks.
func TestNotesOverflowSendsLostMarker(t *testing.T) {
	sys := quietSystem()
	defer sys.Shutdown()
	bound := make(map[fsm.SessionID]ConnID)
	var ids []fsm.SessionID
	for i := range noteChunk + 100 {
		id := fsm.SessionID{14: byte(i >> 8), 15: byte(i)}
		bound[id] = ConnID(1000 + i)
		ids = append(ids, id)
	}
	pid, conns := noteDirectory(t, sys, true, bound, nil)
	obs := NewObserver(sys, nil, 100)
	obs.SetLeader(true, pid)
	notes := make([]fsm.Note, 0, MaxNoteTopics+1)
	for i := range MaxNoteTopics + 1 {
		notes = append(notes, fsm.Note{Topic: fmt.Sprint(i), Sessions: ids[:1], Payload: []byte("x")})
	}
	notes[0].Sessions = ids // the first note goes to everybody
	obs.notes.put(notes, time.Now())
	if _, d := obs.NoteStats(); d != 1 {
		t.Fatalf("dropped %d, want 1", d)
	}
	sys.Root.Send(pid, &notesReady{box: &obs.notes})
	want := len(ids) /* lost markers */ + len(ids) /* note 0 */ + MaxNoteTopics - 1 /* the others, to ids[0] */
	waitFrames(t, conns, want)
	for i, id := range ids {
		got := conns.notes(t, bound[id])
		if len(got) < 2 || got[0].Flags != codec.NotificationLost || len(got[0].Payload) != 0 || got[1].Flags != 0 {
			t.Fatalf("session %d: first frames %+v", i, got[:min(2, len(got))])
		}
	}
}

// TestNoteBoxBoundedInBytes checks MaxNoteBytes: notes whose payloads would
// take the box past it are dropped (and the lost flag set, so every
// watcher re-synchronises), whether they are new topics or replace a
// waiting note with a larger one; the box never holds more than the bound.
func TestNoteBoxBoundedInBytes(t *testing.T) {
	var b noteBox
	big := make([]byte, 1<<20)
	ids := []fsm.SessionID{{15: 1}}
	var notes []fsm.Note
	for i := range 20 { // 20 MiB offered, 16 MiB allowed
		notes = append(notes, fsm.Note{Topic: fmt.Sprint(i), Sessions: ids, Payload: big})
	}
	b.put(notes, time.Now())
	if b.bytes > MaxNoteBytes {
		t.Fatalf("box holds %d bytes, bound %d", b.bytes, MaxNoteBytes)
	}
	if !b.lost || b.dropped == 0 {
		t.Fatalf("lost %v dropped %d: notes past the byte bound must be dropped and marked", b.lost, b.dropped)
	}
	kept := len(b.list)
	// A replacement that would grow the box past the bound is dropped too.
	b.put([]fsm.Note{{Topic: "0", Sessions: ids, Payload: make([]byte, 4<<20)}}, time.Now())
	if b.bytes > MaxNoteBytes || len(b.list) != kept || len(b.list[0].Payload) != 1<<20 {
		t.Fatalf("after an oversized replacement: %d bytes, %d notes, note 0 of %d bytes", b.bytes, len(b.list), len(b.list[0].Payload))
	}
	list, lost := b.take()
	if len(list) != kept || !lost || b.bytes != 0 {
		t.Fatalf("take: %d notes, lost %v, %d bytes left", len(list), lost, b.bytes)
	}
	// An emptied box takes notes again.
	b.put(notes[:1], time.Now())
	if len(b.list) != 1 || b.lost {
		t.Fatalf("after take: %d notes, lost %v", len(b.list), b.lost)
	}
}
