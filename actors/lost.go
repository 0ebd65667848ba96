package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
)

// errLostToRestart is the error of a proposal or read that the raft bridge
// lost when it panicked before handing it to Raft.
var errLostToRestart = fmt.Errorf("%w: the raft bridge restarted before handing the request to Raft", ErrUnavailable)

// lostText is the message of a session request answered by AnswerLost.
const lostText = "the node lost this request to an actor restart; ask again"

// AnswerLost answers a message that the actor of the given kind (a child of
// the node root: supervision.Kind) lost because it panicked while handling
// it, when someone waits for an answer that would otherwise never come:
// protoactor does not deliver that message again. The root's supervisor
// calls it with the message that failed.
//
//   - raft bridge: a Propose or Read is answered with ErrUnavailable. The
//     bridge only hands messages over (to Work), as the last thing it does,
//     so one lost with a panic never reached Raft. Its sender then decides
//     at once: the directory rejects the session request, the keepalive
//     actor undoes its liveness record, a session actor reads its pending
//     requests again. Without this a lost continuation read left its client
//     waiting for its dial timeout (5 s by default, half a session timeout),
//     and two such losses in a row, in a storm of panics, let the session
//     expire while its client was asking to continue it.
//   - session directory: a session creation or continuation (the client's
//     message, or the Raft answer the directory was handling) is rejected
//     with ClusterUnavailable, so the client asks again after a short
//     backoff.
//
// Other lost messages need no answer here: a lost client request or query
// is resent by its client when its connection is bound again (a restarted
// directory unbinds every connection), a lost keep-alive is covered by the
// next one, and timers and notices are periodic.
func AnswerLost(system *actor.ActorSystem, env *Env, kind string, msg any) {
	switch kind {
	case "raft":
		switch m := msg.(type) {
		case *Propose:
			if m.ReplyTo != nil {
				system.Root.Send(m.ReplyTo, &Proposed{Tag: m.Tag, Err: errLostToRestart})
			}
		case *Read:
			if m.ReplyTo != nil {
				system.Root.Send(m.ReplyTo, &ReadDone{Tag: m.Tag, Err: errLostToRestart})
			}
		}
	case "sessions":
		conn, nonce, ok := lostSessionRequest(msg)
		if ok {
			env.debug("directory: session request lost to a restart, rejected", "conn", conn)
			env.send(conn, &codec.SessionRejected{Nonce: nonce, Reason: codec.CodeClusterUnavailable, Message: lostText})
		}
	}
}

// lostSessionRequest returns the connection and nonce of the session
// creation or continuation that msg, lost by the directory, carried or
// answered.
func lostSessionRequest(msg any) (ConnID, uint64, bool) {
	switch m := msg.(type) {
	case *Inbound:
		switch r := m.Msg.(type) {
		case *codec.CreateSession:
			return m.Conn, r.Nonce, true
		case *codec.ContinueSession:
			return m.Conn, r.Nonce, true
		}
	case *ReadDone:
		if t, ok := m.Tag.(continueTag); ok {
			return t.conn, t.nonce, true
		}
	case *Proposed:
		if t, ok := m.Tag.(createTag); ok {
			return t.conn, t.nonce, true
		}
	}
	return 0, 0, false
}
