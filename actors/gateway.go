// gateway: the protocol boundary of a node.
//
// Owns: the Inbox that the transport's connection goroutines call, and the
// handling of frames that do not decode. The Inbox decodes each frame on the
// connection's own goroutine (decoding is pure and cheap, and connections
// then decode in parallel) and posts the message to the session directory;
// it never blocks the transport: past MaxInbox messages waiting, a frame is
// dropped and counted, and the client's retry covers it. A keep-alive on a
// connection bound to a session, acknowledging nothing new, is answered on
// that goroutine and its sign of life noted in the Liveness table, which the
// keepalive actor drains each tick: the most frequent message costs no actor
// message at all. A frame that does
// not decode goes to the gateway actor, which counts it, answers it when the
// header says whom to answer (RequestError / QueryError / SessionRejected
// with Malformed or TooLarge), and drops it; the connection carries on.
// Replies do not come back through the gateway: actors encode and send them
// through Env.Conns, which is safe from any goroutine.
//
// Spawned by the node root, supervised by it (restart: nothing to rebuild;
// the bad frame being answered is lost), stopped when the node closes.
package actors

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
)

// Inbound is a decoded client message, routed to the sessions directory.
type Inbound struct {
	Conn ConnID
	Msg  codec.Message
	// size is the frame's length, charged to the inbox's byte budget
	// until the directory handles the message.
	size int
}

// ConnGone tells the directory a connection closed.
type ConnGone struct{ Conn ConnID }

// ConnOpened tells the directory a connection completed its handshake.
type ConnOpened struct{ Conn ConnID }

type frameIn struct {
	conn  ConnID
	frame []byte
}

// Inbox feeds the gateway from transport goroutines. Its methods never block.
type Inbox struct {
	root    *actor.RootContext
	gateway *actor.PID
	env     *Env
	max     int64
	pending atomic.Int64
	// maxBytes bounds the bytes of the frames admitted and not yet
	// handled (each decoded message keeps its frame alive).
	maxBytes int64
	bytes    atomic.Int64
	metrics  *Metrics
	// gate is held shared by every post and exclusively by Pause.
	gate sync.RWMutex
	// live is the keep-alive fast path's table (see liveness.go).
	live *Liveness
	now  func() time.Time
	// sources maps each open connection to its source (SourceKey of its
	// remote address), from Opened to Closed; it outlives restarts of the
	// actors that read it.
	sources sync.Map
}

// Source returns the source of an open connection (see SourceKey), or ""
// when the inbox does not know it.
func (in *Inbox) Source(conn ConnID) string {
	if in == nil {
		return ""
	}
	s, _ := in.sources.Load(conn)
	k, _ := s.(string)
	return k
}

// SourceKey names the source of a connection for per-source limits: its
// IPv4 address, or the /64 prefix of its IPv6 address (one host usually
// holds a whole /64), as the transport counts connections per source.
func SourceKey(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		if a == nil {
			return ""
		}
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Pause holds off every post from the transport until the returned
// function is called. The node pauses while it spawns the gateway or the
// directory afresh: protoactor races when a message reaches a mailbox
// that is still being set up.
func (in *Inbox) Pause() (resume func()) {
	in.gate.Lock()
	return in.gate.Unlock
}

// NewInbox returns an inbox that admits at most max frames, and at most
// maxBytes bytes of frames, waiting to be handled.
func NewInbox(system *actor.ActorSystem, env *Env, max int, maxBytes int64) *Inbox {
	now := time.Now
	if env.Now != nil {
		now = env.Now
	}
	return &Inbox{root: system.Root, gateway: env.Refs.Gateway, env: env, max: int64(max), maxBytes: maxBytes, metrics: env.Metrics,
		live: NewLiveness(now()), now: now}
}

// Liveness returns the table of bound connections and their signs of life,
// which the session directory keeps and the keepalive actor drains. It is
// nil for a nil Inbox.
func (in *Inbox) Liveness() *Liveness {
	if in == nil {
		return nil
	}
	return in.live
}

// Opened tells the directory about a connection that completed its
// handshake, so that it can close it if it never binds a session. It is
// called on the connection's goroutine before any of its frames.
func (in *Inbox) Opened(conn ConnID, remote net.Addr) {
	in.sources.Store(conn, SourceKey(remote))
	in.gate.RLock()
	defer in.gate.RUnlock()
	in.root.Send(in.env.Refs.Sessions, &ConnOpened{Conn: conn})
}

// Received decodes a frame on the connection's own goroutine (decoding is
// pure, and connections decode in parallel) and hands the message to the
// session directory; a frame that does not decode goes to the gateway actor,
// which counts and answers it. Past MaxInbox messages or MaxInboxBytes bytes
// waiting, a frame is dropped and counted, and the client's retry covers it.
func (in *Inbox) Received(conn ConnID, frame []byte) {
	in.gate.RLock()
	defer in.gate.RUnlock()
	n := int64(len(frame))
	if in.pending.Add(1) > in.max {
		in.pending.Add(-1)
		in.metrics.InboxDropped.Inc()
		return
	}
	if in.bytes.Add(n) > in.maxBytes {
		in.bytes.Add(-n)
		in.pending.Add(-1)
		in.metrics.InboxDropped.Inc()
		return
	}
	msg, err := codec.Decode(frame, &in.env.Settings.Limits)
	if err == nil && !msg.Kind().FromClient() {
		err = codec.ErrUnknownKind
	}
	if err != nil {
		in.root.Send(in.gateway, &frameIn{conn: conn, frame: frame})
		return
	}
	in.metrics.MessagesIn.WithLabelValues(msg.Kind().String()).Inc()
	// Every message of a bound connection is a sign that it is alive; a
	// keep-alive that acknowledges nothing new is answered right here, with
	// no actor involved (liveness.go).
	ka, isKeepAlive := msg.(*codec.KeepAlive)
	var acked uint64
	if isKeepAlive {
		acked = ka.AckedUpTo
	}
	if _, answer := in.live.Heard(conn, in.now(), isKeepAlive, acked); answer && in.env.Settings.KeepAliveFastPath {
		in.handled(len(frame))
		in.env.sendNow(conn, &codec.KeepAliveResponse{Timestamp: ka.Timestamp})
		return
	}
	in.root.Send(in.env.Refs.Sessions, &Inbound{Conn: conn, Msg: msg, size: len(frame)})
}

// Dropped releases the admission of a message whose handling panicked
// (the supervisor calls it: protoactor never delivers that message again).
// Other messages are ignored.
func (in *Inbox) Dropped(msg any) {
	switch m := msg.(type) {
	case *Inbound:
		in.handled(m.size)
	case *frameIn:
		in.handled(len(m.frame))
	}
}

// handled releases one admitted frame of size bytes; whoever handles it
// calls this once.
func (in *Inbox) handled(size int) {
	in.pending.Add(-1)
	in.bytes.Add(-int64(size))
}

// Pending returns the number of admitted frames not yet handled, and their
// bytes.
func (in *Inbox) Pending() (frames, bytes int64) { return in.pending.Load(), in.bytes.Load() }

// Reconcile sets the count of admitted frames to zero. The node calls it
// when it starts afresh an actor that handles them (the gateway or the
// session directory) after its supervisor stopped it: the frames in the
// stopped actor's mailbox, and those sent to it while it was gone, were
// dropped without being released, and would otherwise hold their slots
// for ever (after MaxInbox such leaks every frame would be dropped).
// Frames already on their way to the other, running actor may take the
// count a little below zero when they are handled; that admits as many
// more frames once, never fewer.
func (in *Inbox) Reconcile() {
	in.pending.Store(0)
	in.bytes.Store(0)
}

// Closed tells the directory that the connection is gone. It is sent from
// the connection's reader goroutine after its last Received, so the
// directory sees it after the connection's last message.
func (in *Inbox) Closed(conn ConnID, _ error) {
	in.gate.RLock()
	defer in.gate.RUnlock()
	in.root.Send(in.env.Refs.Sessions, &ConnGone{Conn: conn})
	in.sources.Delete(conn)
}

type gateway struct {
	env   *Env
	inbox *Inbox
}

// NewGateway returns the producer of the gateway actor.
func NewGateway(env *Env, inbox *Inbox) actor.Producer {
	return func() actor.Actor { return &gateway{env: env, inbox: inbox} }
}

func (g *gateway) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *frameIn:
		g.inbox.handled(len(m.frame))
		g.reject(m, g.decodeErr(m.frame))
	}
}

func (g *gateway) decodeErr(frame []byte) error {
	msg, err := codec.Decode(frame, &g.env.Settings.Limits)
	if err == nil && !msg.Kind().FromClient() {
		err = codec.ErrUnknownKind
	}
	return err
}

// reject counts a frame that did not decode and answers it when possible.
func (g *gateway) reject(in *frameIn, err error) {
	if err == nil {
		// Not reached: the inbox sends only frames that failed to decode.
		return
	}
	code, reason := codec.CodeMalformed, "malformed"
	if errors.Is(err, codec.ErrTooLarge) {
		code, reason = codec.CodeTooLarge, "too_large"
	}
	g.env.Metrics.BadFrames.WithLabelValues(reason).Inc()
	kind, herr := codec.PeekHeader(in.frame)
	if herr != nil {
		// Not our protocol or not our version: nothing can be answered
		// in a form the peer would understand.
		return
	}
	msg := err.Error()
	switch kind {
	case codec.KindClientRequest:
		if id, ok := codec.PeekID(in.frame); ok {
			g.env.send(in.conn, &codec.RequestError{RequestID: id, Reason: code, Message: msg})
		}
	case codec.KindQuery:
		if id, ok := codec.PeekID(in.frame); ok {
			g.env.send(in.conn, &codec.QueryError{CorrelationID: id, Reason: code, Message: msg})
		}
	case codec.KindCreateSession, codec.KindContinueSession:
		// The nonce is echoed when the frame is long enough to hold it
		// (0 otherwise), so the client can match the refusal.
		nonce, _ := codec.PeekNonce(in.frame)
		g.env.send(in.conn, &codec.SessionRejected{Nonce: nonce, Reason: code, Message: msg})
	}
}
