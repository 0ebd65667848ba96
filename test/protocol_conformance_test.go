package test

// Conformance: what docs/protocol.md says about the server's answers, checked
// over the raw wire. Each test names the section it checks.

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/node"
)

// TestProtocolConformance runs the conformance checks that need no cluster
// of their own on one 3-node cluster, one after the other.
func TestProtocolConformance(t *testing.T) {
	c := startCluster(t, nil)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *cluster)
	}{
		{"QueryWithUnknownConsistencyIsUnsupported", testQueryWithUnknownConsistencyIsUnsupported},
		{"SameIdentityOnTwoConnectionsIsServedSeparately", testSameIdentityOnTwoConnectionsIsServedSeparately},
		{"CapabilityLimitsAreTheProtocolsWithTooLarge", testCapabilityLimitsAreTheProtocolsWithTooLarge},
		{"EmptyIdentityIsServed", testEmptyIdentityIsServed},
		{"ClientAddressesAreHostPortAndDialableWithScheme", testClientAddressesAreHostPortAndDialableWithScheme},
		{"LowestPendingAboveRequestIDIsMalformed", testLowestPendingAboveRequestIDIsMalformed},
		{"ContinueClosedSessionIsSessionNotFound", testContinueClosedSessionIsSessionNotFound},
		{"CreateSessionRetryWithSameNonceAndSecretYieldsSameSession", testCreateSessionRetryWithSameNonceAndSecretYieldsSameSession},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, c) })
	}
}

// §5.5 and §7: a Query with a consistency level the server does not know is
// answered QueryError(Unsupported) with its correlation id; known levels are
// served.
func testQueryWithUnknownConsistencyIsUnsupported(t *testing.T, c *cluster) {
	w := dial(t, c.leader(t).ClientAddr())
	w.createSession()
	value := counterValue(t, w.request(1, 1, "incr"))
	for i, cons := range []codec.Consistency{2, 7, 255, codec.Linearizable, codec.Stale} {
		id := uint64(100 + i)
		w.send(&codec.Query{CorrelationID: id, Consistency: cons, Payload: []byte("get")})
		m := w.next(func(m codec.Message) bool {
			switch r := m.(type) {
			case *codec.QueryResponse:
				return r.CorrelationID == id
			case *codec.QueryError:
				return r.CorrelationID == id
			}
			return false
		})
		if cons.Known() {
			if r, ok := m.(*codec.QueryResponse); !ok || counterFromBytes(r.Result) < value {
				t.Fatalf("consistency %v: got %+v, want QueryResponse >= %d", cons, m, value)
			}
			continue
		}
		qe, ok := m.(*codec.QueryError)
		if !ok || qe.Reason != codec.CodeUnsupported || qe.Leader != (codec.LeaderHint{}) {
			t.Fatalf("consistency %v: got %+v, want QueryError(Unsupported) without hint", cons, m)
		}
	}
}

// rawDealer is a DEALER that declares the routing identity it is given, as
// a libzmq client with ZMQ_ROUTING_ID would. It speaks ZMTP through zmq4's
// connection layer directly, without the transport package.
type rawDealer struct {
	t  *testing.T
	nc net.Conn
	zc *zmq4.Conn
}

func dialIdentity(t *testing.T, addr string, id []byte) *rawDealer {
	t.Helper()
	nc, err := net.DialTimeout("tcp", strings.TrimPrefix(addr, "tcp://"), waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	zc, err := zmq4.Open(nc, null.Security(), zmq4.Dealer, zmq4.SocketIdentity(id), false, nil)
	if err != nil {
		_ = nc.Close()
		t.Fatalf("ZMTP handshake: %v", err)
	}
	d := &rawDealer{t: t, nc: nc, zc: zc}
	t.Cleanup(func() { _ = nc.Close() })
	return d
}

func (d *rawDealer) send(m codec.Message) {
	d.t.Helper()
	f, err := codec.Encode(m)
	if err != nil {
		d.t.Fatal(err)
	}
	_ = d.nc.SetDeadline(time.Now().Add(waitTimeout))
	if err := d.zc.SendMsg(zmq4.NewMsg(f)); err != nil {
		d.t.Fatalf("send: %v", err)
	}
}

// next returns the next message match accepts, skipping others.
func (d *rawDealer) next(match func(codec.Message) bool) codec.Message {
	d.t.Helper()
	_ = d.nc.SetDeadline(time.Now().Add(waitTimeout))
	for {
		msg, err := d.zc.RecvMsg()
		if err != nil {
			d.t.Fatalf("recv: %v", err)
		}
		if len(msg.Frames) != 1 {
			d.t.Fatalf("server sent a %d-part message", len(msg.Frames))
		}
		m, err := codec.Decode(msg.Frames[0], nil)
		if err != nil {
			d.t.Fatalf("server sent an undecodable frame: %v", err)
		}
		if match(m) {
			return m
		}
	}
}

// §1: identities are ignored and the connection is the unit. Two live
// connections that declare the same routing identity are both served, and
// neither ever receives the other's replies.
func testSameIdentityOnTwoConnectionsIsServedSeparately(t *testing.T, c *cluster) {
	addr := c.leader(t).ClientAddr()
	id := []byte("0123456789abcdef")
	a := dialIdentity(t, addr, id)
	b := dialIdentity(t, addr, id)

	a.send(&codec.CreateSession{Nonce: 1, Secret: codec.Secret{1}})
	if m := a.next(kindIs(codec.KindSessionCreated, codec.KindSessionRejected)); m.Kind() != codec.KindSessionCreated {
		t.Fatalf("first connection: %+v", m)
	}
	b.send(&codec.CreateSession{Nonce: 2, Secret: codec.Secret{2}})
	created, ok := b.next(kindIs(codec.KindSessionCreated, codec.KindSessionRejected)).(*codec.SessionCreated)
	if !ok || created.Nonce != 2 {
		t.Fatalf("second connection with the same identity: %+v, want SessionCreated nonce 2", created)
	}
	// Each connection gets the answers to its own requests only: request ids
	// 1..3 on a, 1..3 on b, interleaved; the counter shows each ran once and
	// the keep-alive timestamps tell the connections apart.
	for i := uint64(1); i <= 3; i++ {
		a.send(&codec.ClientRequest{RequestID: i, LowestPending: i, Payload: []byte("incr")})
		b.send(&codec.KeepAlive{Timestamp: int64(1000 + i)})
		b.send(&codec.ClientRequest{RequestID: i, LowestPending: i, Payload: []byte("incr")})
		a.send(&codec.KeepAlive{Timestamp: int64(2000 + i)})
	}
	seen := map[uint64]bool{}
	for _, d := range []struct {
		w    *rawDealer
		base int64
	}{{a, 2000}, {b, 1000}} {
		got := 0
		for got < 6 {
			m := d.w.next(func(codec.Message) bool { return true })
			switch r := m.(type) {
			case *codec.ClientResponse:
				v := counterFromBytes(r.Result)
				if seen[v] {
					t.Fatalf("counter value %d delivered twice", v)
				}
				seen[v] = true
				got++
			case *codec.KeepAliveResponse:
				if r.Timestamp <= d.base || r.Timestamp > d.base+3 {
					t.Fatalf("keep-alive response %d crossed to the other connection", r.Timestamp)
				}
				got++
			default:
				t.Fatalf("unexpected %+v", m)
			}
		}
	}
	if len(seen) != 6 {
		t.Fatalf("counter values %v, want 6 distinct", seen)
	}
}

// §4 and §6: the capability limits a client can hit are MaxCapabilities (64)
// and MaxString (256 bytes), and past them the answer is
// SessionRejected(TooLarge), echoing the nonce; at the limits the session is
// created.
func testCapabilityLimitsAreTheProtocolsWithTooLarge(t *testing.T, c *cluster) {
	addr := c.leader(t).ClientAddr()
	lim := codec.DefaultLimits()
	caps := func(n, size int) []codec.Capability {
		out := make([]codec.Capability, n)
		for i := range out {
			name := []byte(strings.Repeat("n", size))
			copy(name, []byte{byte('A' + i/26), byte('a' + i%26)})
			out[i] = codec.Capability{Name: string(name), Value: strings.Repeat("v", size)}
		}
		return out
	}
	// At the limits: 64 capabilities whose names and values are 256 bytes.
	w := dial(t, addr)
	w.createSession(caps(lim.MaxCapabilities, lim.MaxString)...)

	big := lim
	big.MaxCapabilities, big.MaxString = 1000, 1000
	for _, tc := range []struct {
		name string
		caps []codec.Capability
	}{
		{"65 capabilities", caps(lim.MaxCapabilities+1, 8)},
		{"20 capabilities of 200 bytes", caps(20, 200)},
		{"a 257-byte name", caps(1, lim.MaxString+1)},
	} {
		w := dial(t, addr)
		f, err := codec.Append(nil, &codec.CreateSession{Nonce: 77, Secret: codec.Secret{7}, Capabilities: tc.caps}, &big)
		if err != nil {
			t.Fatal(err)
		}
		w.sendRaw(f)
		m := w.next(kindIs(codec.KindSessionCreated, codec.KindSessionRejected))
		rej, ok := m.(*codec.SessionRejected)
		wantTooLarge := tc.name != "20 capabilities of 200 bytes"
		switch {
		case wantTooLarge && (!ok || rej.Reason != codec.CodeTooLarge || rej.Nonce != 77):
			t.Fatalf("%s: got %+v, want SessionRejected(TooLarge) nonce 77", tc.name, m)
		case !wantTooLarge && !ok:
			// Within the protocol's limits: created.
		case !wantTooLarge:
			t.Fatalf("%s: got %+v, want SessionCreated (within §4's limits)", tc.name, m)
		}
	}
}

// §8.7 and docs/operations.md: closing the leader (what SIGTERM does) hands
// leadership over first, and every bound client gets
// SessionClosed(ShuttingDown) with a hint naming the new leader; continuing
// the session at the hinted address succeeds. No answer on the way carries
// ClusterUnavailable with a leader hint.
func TestClosingLeaderSendsShuttingDownWithNewLeaderHint(t *testing.T) {
	c := startCluster(t, nil)
	old := c.leader(t)
	w := dial(t, old.ClientAddr())
	created, secret := w.createSession()
	if got := counterValue(t, w.request(1, 1, "incr")); got != 1 {
		t.Fatalf("incr = %d", got)
	}

	closed := make(chan error, 1)
	go func() { closed <- c.Stop(old.ID()) }()
	defer func() {
		if err := <-closed; err != nil {
			t.Errorf("close leader: %v", err)
		}
	}()

	var sc *codec.SessionClosed
	for sc == nil {
		m, err := w.nextWithin(waitTimeout, nil)
		if err != nil {
			t.Fatalf("no SessionClosed from the closing leader: %v", err)
		}
		switch r := m.(type) {
		case *codec.SessionClosed:
			sc = r
		case *codec.KeepAliveResponse:
		default:
			t.Fatalf("closing leader sent %+v before SessionClosed", m)
		}
	}
	if sc.Reason != codec.CodeShuttingDown || sc.Leader.ID == 0 || sc.Leader.ID == old.ID() {
		t.Fatalf("closing leader sent %+v, want ShuttingDown with the new leader's hint", sc)
	}
	var hinted *node.Node
	for _, n := range c.Nodes() {
		if n.ID() == sc.Leader.ID {
			hinted = n
		}
	}
	if hinted == nil || hinted.ClientAddr() != sc.Leader.ClientAddr {
		t.Fatalf("hint %+v names no running member's client address", sc.Leader)
	}

	// The hinted leader continues the session at once (it may refuse while
	// it settles, but never with ClusterUnavailable and a hint).
	nw := dial(t, sc.Leader.ClientAddr)
	deadline := time.Now().Add(waitTimeout)
	for {
		m := nw.continueSession(created.SessionID, secret)
		if _, ok := m.(*codec.SessionContinued); ok {
			break
		}
		rej := m.(*codec.SessionRejected)
		if !rej.Reason.Retryable() || (rej.Reason == codec.CodeClusterUnavailable && rej.Leader != (codec.LeaderHint{})) {
			t.Fatalf("hinted leader answered %+v", rej)
		}
		if time.Now().After(deadline) {
			t.Fatalf("hinted leader kept refusing: %+v", rej)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := counterValue(t, nw.request(1, 1, "incr")); got != 1 {
		t.Fatalf("retried request 1 = %d, want the cached 1", got)
	}
	if got := counterValue(t, nw.request(2, 2, "incr")); got != 2 {
		t.Fatalf("request 2 = %d, want 2", got)
	}
}

// §6: ClusterUnavailable never carries a leader hint. A leader that was just
// elected answers continuations (which need a ReadIndex round) without
// "shard is not ready" refusals that point at itself.
func TestNewLeaderAnswersContinuationWithoutUnavailableHint(t *testing.T) {
	// A longer session timeout keeps the waiting connection from being
	// reaped as unbound while a transfer is retried.
	c := startCluster(t, func(cfg *node.Config) { cfg.SessionTimeout = 5 * time.Second })
	l := c.leader(t)
	w := dial(t, l.ClientAddr())
	created, secret := w.createSession()
	for round := 0; round < 3; round++ {
		target := c.follower(t)
		nw := dial(t, target.ClientAddr())
		// Continue on the target as soon as it says it leads. dragonboat's
		// transfer is best effort, so it is asked again until it happens.
		deadline := time.Now().Add(waitTimeout)
		var asked time.Time
		for {
			if id, _, ok := target.Leader(); ok && id == target.ID() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: leadership did not move to %d", round, target.ID())
			}
			if time.Since(asked) > 500*time.Millisecond {
				_ = l.TransferLeadership(target.ID())
				asked = time.Now()
			}
			time.Sleep(time.Millisecond)
		}
		for {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the session was not continued on the new leader", round)
			}
			m := nw.continueSession(created.SessionID, secret)
			if _, ok := m.(*codec.SessionContinued); ok {
				break
			}
			rej := m.(*codec.SessionRejected)
			if rej.Reason == codec.CodeClusterUnavailable && rej.Leader != (codec.LeaderHint{}) {
				t.Fatalf("round %d: new leader answered %+v", round, rej)
			}
			if rej.Reason != codec.CodeNotLeader && rej.Reason != codec.CodeClusterUnavailable {
				t.Fatalf("round %d: new leader answered %+v", round, rej)
			}
			time.Sleep(5 * time.Millisecond)
		}
		l = c.leader(t)
	}
}

// §1: a connection that declares no identity at all (an empty one, as a
// libzmq DEALER with default options does) is served like any other.
func testEmptyIdentityIsServed(t *testing.T, c *cluster) {
	d := dialIdentity(t, c.leader(t).ClientAddr(), nil)
	d.send(&codec.CreateSession{Nonce: 5, Secret: codec.Secret{5}})
	if m := d.next(kindIs(codec.KindSessionCreated, codec.KindSessionRejected)); m.Kind() != codec.KindSessionCreated {
		t.Fatalf("CreateSession without identity: %+v", m)
	}
}

// §3: client addresses are carried as host:port without a scheme (members
// and hints), and dialing them with the tcp:// scheme works too.
func testClientAddressesAreHostPortAndDialableWithScheme(t *testing.T, c *cluster) {
	l := c.leader(t)
	w := dial(t, "tcp://"+l.ClientAddr())
	created, _ := w.createSession()
	for _, m := range created.Members {
		if strings.Contains(m.ClientAddr, "://") {
			t.Fatalf("member %d address %q carries a scheme", m.ID, m.ClientAddr)
		}
		if _, _, err := net.SplitHostPort(m.ClientAddr); err != nil {
			t.Fatalf("member %d address %q is not host:port: %v", m.ID, m.ClientAddr, err)
		}
	}
	f := dial(t, c.follower(t).ClientAddr())
	f.send(&codec.CreateSession{Nonce: 9, Secret: codec.Secret{9}})
	rej := f.next(kindIs(codec.KindSessionRejected)).(*codec.SessionRejected)
	if rej.Reason != codec.CodeNotLeader || rej.Leader.ClientAddr != l.ClientAddr() {
		t.Fatalf("follower answered %+v, want NotLeader with the leader's host:port %s", rej, l.ClientAddr())
	}
	dial(t, "tcp://"+rej.Leader.ClientAddr).createSession()
}

// §5.4: lowest_pending above request_id (or 0) is malformed: answered
// RequestError(Malformed) with the request id, and nothing runs.
func testLowestPendingAboveRequestIDIsMalformed(t *testing.T, c *cluster) {
	w := dial(t, c.leader(t).ClientAddr())
	w.createSession()
	before := counterValue(t, w.request(1, 1, "incr"))
	for _, lowest := range []uint64{4, 0} {
		f := []byte{'Z', 'R', codec.Version, byte(codec.KindClientRequest)}
		f = binary.BigEndian.AppendUint64(f, 2)
		f = binary.BigEndian.AppendUint64(f, lowest)
		f = binary.BigEndian.AppendUint32(f, 4)
		f = append(f, "incr"...)
		w.sendRaw(f)
		re, ok := w.next(answers(2)).(*codec.RequestError)
		if !ok || re.Reason != codec.CodeMalformed {
			t.Fatalf("lowest_pending %d: got %+v, want RequestError(Malformed) for id 2", lowest, re)
		}
	}
	// Request 2 was never executed: sent validly now it runs, once, right
	// after request 1 (subtests share the counter but run one at a time).
	if got := counterValue(t, w.request(2, 2, "incr")); got != before+1 {
		t.Fatalf("incr after the malformed ones = %d, want %d (they must not run)", got, before+1)
	}
}

// §8.3: continuing a closed session gets SessionRejected(SessionNotFound);
// a wrong secret gets BadSecret.
func testContinueClosedSessionIsSessionNotFound(t *testing.T, c *cluster) {
	addr := c.leader(t).ClientAddr()
	w := dial(t, addr)
	created, secret := w.createSession()
	w.send(&codec.CloseSession{Reason: codec.CodeClientClosed})
	if sc := w.next(kindIs(codec.KindSessionClosed)).(*codec.SessionClosed); sc.Reason != codec.CodeClientClosed {
		t.Fatalf("CloseSession answered %+v", sc)
	}
	nw := dial(t, addr)
	for _, s := range []codec.Secret{secret, {0xee}} {
		rej, ok := nw.continueSession(created.SessionID, s).(*codec.SessionRejected)
		if !ok || rej.Reason != codec.CodeSessionNotFound || rej.Leader != (codec.LeaderHint{}) {
			t.Fatalf("continue closed session: %+v, want SessionRejected(SessionNotFound)", rej)
		}
	}
}

// §5.1: resending the same CreateSession (same nonce and secret), here on
// another connection as after a lost answer or OutcomeUnknown, yields the
// same session, not a second one.
func testCreateSessionRetryWithSameNonceAndSecretYieldsSameSession(t *testing.T, c *cluster) {
	addr := c.leader(t).ClientAddr()
	msg := &codec.CreateSession{Nonce: 1234, Secret: codec.Secret{1, 2, 3, 4}}
	var ids []codec.SessionID
	for range 2 {
		w := dial(t, addr)
		w.send(msg)
		created, ok := w.next(kindIs(codec.KindSessionCreated, codec.KindSessionRejected)).(*codec.SessionCreated)
		if !ok {
			t.Fatal("CreateSession refused")
		}
		ids = append(ids, created.SessionID)
	}
	if ids[0] != ids[1] {
		t.Fatalf("retry created a second session: %x then %x", ids[0], ids[1])
	}
	// A different nonce is a different session.
	w := dial(t, addr)
	w.send(&codec.CreateSession{Nonce: 1235, Secret: msg.Secret})
	if created := w.next(kindIs(codec.KindSessionCreated)).(*codec.SessionCreated); created.SessionID == ids[0] {
		t.Fatal("a new nonce returned the old session")
	}
}
