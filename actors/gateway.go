// gateway: the protocol boundary of a node.
//
// Owns: decoding. Frames arrive from the transport's connection goroutines
// through Inbox (which never blocks them: past MaxInbox frames waiting, a
// frame is dropped and counted, and the client's retry covers it). The gateway
// decodes each frame; a frame that does not decode is counted, answered when
// the header says whom to answer (RequestError / QueryError / SessionRejected
// with Malformed or TooLarge), and dropped; the connection and the actor carry
// on. Decoded messages go to the sessions directory. Replies do not come back
// through the gateway: actors encode and send them through Env.Conns, which is
// safe from any goroutine, saving a hop on every reply.
//
// Spawned by the node root, supervised by it (restart: nothing to rebuild;
// the frame being decoded is lost and the client retries), stopped when the
// node closes.
package actors

import (
	"errors"
	"net"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
)

// Inbound is a decoded client message, routed to the sessions directory.
type Inbound struct {
	Conn ConnID
	Msg  codec.Message
}

// ConnGone tells the directory a connection closed.
type ConnGone struct{ Conn ConnID }

type frameIn struct {
	conn  ConnID
	frame []byte
}

type connClosed struct{ conn ConnID }

// Inbox feeds the gateway from transport goroutines. Its methods never block.
type Inbox struct {
	root    *actor.RootContext
	gateway *actor.PID
	max     int64
	pending atomic.Int64
	metrics *Metrics
}

// NewInbox returns an inbox that admits at most max frames waiting for the
// gateway.
func NewInbox(system *actor.ActorSystem, gateway *actor.PID, max int, m *Metrics) *Inbox {
	return &Inbox{root: system.Root, gateway: gateway, max: int64(max), metrics: m}
}

// Opened is called when a connection completes its handshake.
func (in *Inbox) Opened(ConnID, net.Addr) {}

// Received hands a frame to the gateway, or drops it when the inbox is full.
func (in *Inbox) Received(conn ConnID, frame []byte) {
	if in.pending.Add(1) > in.max {
		in.pending.Add(-1)
		in.metrics.InboxDropped.Inc()
		return
	}
	in.root.Send(in.gateway, &frameIn{conn: conn, frame: frame})
}

// Closed tells the directory (through the gateway, so it is ordered after
// the connection's last frame) that the connection is gone.
func (in *Inbox) Closed(conn ConnID, _ error) {
	in.root.Send(in.gateway, &connClosed{conn: conn})
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
		g.inbox.pending.Add(-1)
		g.frame(c, m)
	case *connClosed:
		c.Send(g.env.Refs.Sessions, &ConnGone{Conn: m.conn})
	}
}

func (g *gateway) frame(c actor.Context, in *frameIn) {
	msg, err := codec.Decode(in.frame, &g.env.Settings.Limits)
	if err == nil && !msg.Kind().FromClient() {
		err = codec.ErrUnknownKind
	}
	if err != nil {
		g.reject(in, err)
		return
	}
	g.env.Metrics.MessagesIn.WithLabelValues(msg.Kind().String()).Inc()
	c.Send(g.env.Refs.Sessions, &Inbound{Conn: in.conn, Msg: msg})
}

// reject counts a frame that did not decode and answers it when possible.
func (g *gateway) reject(in *frameIn, err error) {
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
		g.env.send(in.conn, &codec.SessionRejected{Reason: code, Message: msg})
	}
}
