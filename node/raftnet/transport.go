// Package raftnet is the transport between the members of a zraft cluster:
// a dragonboat transport module (registered through
// NodeHostConfig.Expert.TransportFactory) that replaces dragonboat's own TCP
// transport, whose receiving side trusts its peers (a frame header decides
// how much it allocates, a message decides what its address registry holds,
// and an inconsistency there is a panic).
//
// Everything a connection delivers is checked before dragonboat sees it:
//
//   - with peer TLS, the peer must present a certificate signed by the
//     cluster's CA (mutual TLS), or the connection ends at the handshake;
//   - connections are bounded in number; one that does not start a frame
//     within 10 s of connecting, or within the idle timeout after a frame,
//     is closed;
//   - a frame announcing more than the frame limit is refused (with its
//     connection) before anything is allocated, and memory grows only as
//     bytes arrive;
//   - a message batch must carry the cluster id (dragonboat's deployment id),
//     the transport version, and the registered Raft address of the member
//     every message claims to come from; messages must be addressed to this
//     replica of this shard, and of a type that travels between members;
//   - log entries must be of the kinds zraft writes (see zraftEntry);
//   - a snapshot chunk must carry the cluster id and name this replica and a
//     member as its sender.
//
// What fails a check is dropped, counted (zraft_peer_dropped_total{reason})
// and logged (at most once a second per reason). The package never panics on
// peer input; decoding, which is dragonboat's generated code, runs under a
// recover that turns a panic into a drop.
package raftnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/lni/dragonboat/v4/client"
	dbconfig "github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
	"github.com/prometheus/client_golang/prometheus"
)

// Name is the transport's name as dragonboat reports it.
const Name = "zraft-raftnet"

// Config configures the transport of one member.
//
// The cluster id every batch and chunk must carry is dragonboat's
// DeploymentID (NodeHostConfig), which node sets to the cluster id.
type Config struct {
	ShardID   uint64
	ReplicaID uint64
	// Members maps every member's replica id (this one included) to its
	// Raft address, the source address its batches must carry.
	Members map[uint64]string
	// Lookup, when set, names members added since the transport started
	// (the replicated member directory): a sender is a member when Members
	// or Lookup knows it. It must be safe from any goroutine.
	Lookup func(id uint64) (raftAddr string, ok bool)
	// Cert and CAs turn on mutual TLS: this member presents Cert, and
	// accepts only peers (and servers) whose certificate CAs signed. Nil
	// CAs: plaintext.
	Cert tls.Certificate
	CAs  *x509.CertPool
	// MaxConns bounds accepted connections; past it a new connection is
	// closed at once.
	MaxConns int
	// IdleTimeout closes an accepted connection that starts no frame for
	// this long.
	IdleTimeout time.Duration
	// MaxFrame bounds one frame's payload.
	MaxFrame uint64
	Log      *slog.Logger
	Metrics  *Metrics
}

// Timeouts of one step on a connection.
const (
	handshakeTimeout = 10 * time.Second
	frameTimeout     = 10 * time.Second
	dialTimeout      = 5 * time.Second
	writeTimeout     = 10 * time.Second
	poisonAckTimeout = 2 * time.Second
)

// maxScratch bounds the read buffer a connection keeps between frames;
// a larger frame gets memory of its own, released after it.
const maxScratch = 4 << 20

// Metrics counts what the transport refuses.
type Metrics struct {
	Dropped *prometheus.CounterVec
	Conns   prometheus.Gauge
}

// NewMetrics registers the transport's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "zraft_peer_dropped_total",
			Help: "Peer connections, frames and messages refused by the Raft transport, by reason.",
		}, []string{"reason"}),
		Conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "zraft_peer_conns",
			Help: "Accepted connections on the Raft port.",
		}),
	}
	reg.MustRegister(m.Dropped, m.Conns)
	return m
}

// Drop reasons (the label of zraft_peer_dropped_total).
const (
	ReasonConnLimit = "conn_limit" // connection past MaxConns
	ReasonTLS       = "tls"        // TLS handshake failed (no or untrusted certificate, not TLS)
	ReasonIdle      = "idle"       // no frame for IdleTimeout
	ReasonFraming   = "framing"    // bad magic, header checksum or method, or payload checksum
	ReasonTooLarge  = "too_large"  // frame announcing more than MaxFrame
	ReasonDecode    = "decode"     // payload that is not a batch or chunk
	ReasonClusterID = "cluster_id" // another cluster's id (or none)
	ReasonVersion   = "version"    // another transport version
	ReasonSource    = "source"     // sender is not the member it claims to be
	ReasonTarget    = "target"     // not addressed to this replica of this shard
	ReasonType      = "type"       // a message type that never travels between members
	ReasonEntry     = "entry"      // a log entry of a kind zraft never proposes
)

// Factory creates the transport for dragonboat.
type Factory struct{ cfg Config }

var _ dbconfig.TransportFactory = (*Factory)(nil)

// NewFactory returns a factory for cfg.
func NewFactory(cfg Config) *Factory { return &Factory{cfg: cfg} }

// Create implements dbconfig.TransportFactory.
func (f *Factory) Create(nhc dbconfig.NodeHostConfig, h raftio.MessageHandler, ch raftio.ChunkHandler) raftio.ITransport {
	t := &Transport{
		cfg:     f.cfg,
		did:     nhc.GetDeploymentID(),
		addr:    nhc.GetListenAddress(),
		handler: h,
		chunks:  ch,
		conns:   make(map[net.Conn]struct{}),
		lastLog: make(map[string]time.Time),
	}
	if f.cfg.CAs != nil {
		t.serverTLS = &tls.Config{
			Certificates: []tls.Certificate{f.cfg.Cert},
			ClientCAs:    f.cfg.CAs,
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		}
	}
	return t
}

// Validate implements dbconfig.TransportFactory: a Raft address is host:port.
func (f *Factory) Validate(addr string) bool { return dbconfig.IsValidAddress(addr) }

// Transport is a member's Raft transport.
type Transport struct {
	cfg       Config
	did       uint64
	addr      string
	handler   raftio.MessageHandler
	chunks    raftio.ChunkHandler
	serverTLS *tls.Config

	ln     net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	logMu   sync.Mutex
	lastLog map[string]time.Time // by reason; bounded by the reasons
}

var _ raftio.ITransport = (*Transport)(nil)

// Name implements raftio.ITransport.
func (t *Transport) Name() string { return Name }

// Start listens on the member's Raft address.
func (t *Transport) Start() error {
	ln, err := net.Listen("tcp", t.addr)
	if err != nil {
		return fmt.Errorf("raftnet: listen %s: %w", t.addr, err)
	}
	t.ln = ln
	t.wg.Add(1)
	go t.accept()
	return nil
}

// Close stops listening, closes every connection and waits for their
// goroutines.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	if t.ln != nil {
		_ = t.ln.Close()
	}
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

func (t *Transport) accept() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			t.mu.Lock()
			closed := t.closed
			t.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait a little.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		t.mu.Lock()
		switch {
		case t.closed:
			t.mu.Unlock()
			_ = c.Close()
			return
		case len(t.conns) >= t.cfg.MaxConns:
			t.mu.Unlock()
			_ = c.Close()
			t.drop(ReasonConnLimit, c.RemoteAddr(), fmt.Sprintf("limit of %d connections", t.cfg.MaxConns))
			continue
		}
		t.conns[c] = struct{}{}
		t.cfg.Metrics.Conns.Inc()
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serve(c)
	}
}

func (t *Transport) serve(raw net.Conn) {
	defer t.wg.Done()
	defer func() {
		_ = raw.Close()
		t.mu.Lock()
		delete(t.conns, raw)
		t.mu.Unlock()
		t.cfg.Metrics.Conns.Dec()
	}()
	remote := raw.RemoteAddr()
	c := raw
	if t.serverTLS != nil {
		tc := tls.Server(raw, t.serverTLS)
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			t.drop(ReasonTLS, remote, err.Error())
			return
		}
		c = tc
	}
	var scratch []byte // reused for frames up to maxScratch
	// A member dials when it has a message to send: a connection that
	// does not start its first frame within the handshake timeout is not
	// a member's.
	idle := min(t.cfg.IdleTimeout, handshakeTimeout)
	for frames := 0; ; frames++ {
		if frames == 1 {
			idle = t.cfg.IdleTimeout
		}
		err := readMagic(c, idle)
		var ne net.Error
		switch {
		case err == nil:
		case errors.Is(err, errPoison):
			// The sender of a snapshot is done: acknowledge and close.
			_ = c.SetWriteDeadline(time.Now().Add(poisonAckTimeout))
			_, _ = c.Write(poison[:])
			return
		case errors.Is(err, errBadMagic):
			t.drop(ReasonFraming, remote, err.Error())
			return
		case errors.As(err, &ne) && ne.Timeout():
			t.drop(ReasonIdle, remote, fmt.Sprintf("no frame for %v", idle))
			return
		default:
			return // closed by the peer or by Close
		}
		h, payload, err := readFrame(c, t.cfg.MaxFrame, frameTimeout, scratch)
		switch {
		case err == nil:
		case errors.Is(err, errTooLarge):
			t.drop(ReasonTooLarge, remote, err.Error())
			return
		case errors.Is(err, errBadHeader), errors.Is(err, errBadCRC):
			t.drop(ReasonFraming, remote, err.Error())
			return
		default:
			return
		}
		if !t.deliver(h.method, payload, remote) {
			return
		}
		if cap(payload) <= maxScratch {
			scratch = payload[:0]
		}
	}
}

// deliver checks one frame's content and hands it to dragonboat. It reports
// whether the connection may carry on.
func (t *Transport) deliver(method uint16, payload []byte, remote net.Addr) bool {
	if method == MethodRaft {
		var b pb.MessageBatch
		if err := unmarshal(&b, payload); err != nil {
			t.drop(ReasonDecode, remote, err.Error())
			return false
		}
		if reason, detail := t.checkBatch(&b); reason != "" {
			t.drop(reason, remote, detail)
			return false
		}
		t.handler(b)
		return true
	}
	var ch pb.Chunk
	if err := unmarshal(&ch, payload); err != nil {
		t.drop(ReasonDecode, remote, err.Error())
		return false
	}
	if reason, detail := t.checkChunk(&ch); reason != "" {
		t.drop(reason, remote, detail)
		return false
	}
	return t.chunks(ch)
}

type unmarshaler interface{ Unmarshal([]byte) error }

// unmarshal runs dragonboat's decoder, turning a panic into an error.
func unmarshal(m unmarshaler, b []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("raftnet: decoder panicked: %v", r)
		}
	}()
	return m.Unmarshal(b)
}

// checkBatch returns why b must be dropped, or "".
func (t *Transport) checkBatch(b *pb.MessageBatch) (reason, detail string) {
	if b.DeploymentId != t.did {
		return ReasonClusterID, fmt.Sprintf("cluster id %016x", b.DeploymentId)
	}
	if b.BinVer != raftio.TransportBinVersion {
		return ReasonVersion, fmt.Sprintf("transport version %d, want %d", b.BinVer, raftio.TransportBinVersion)
	}
	for i := range b.Requests {
		m := &b.Requests[i]
		if m.ShardID != t.cfg.ShardID || m.To != t.cfg.ReplicaID {
			return ReasonTarget, fmt.Sprintf("%s for shard %d replica %d", m.Type, m.ShardID, m.To)
		}
		if m.From == t.cfg.ReplicaID || !t.member(m.From, b.SourceAddress) {
			return ReasonSource, fmt.Sprintf("%s claims member %d, sent from %q", m.Type, m.From, b.SourceAddress)
		}
		if !networkType(m.Type) {
			return ReasonType, m.Type.String()
		}
		for j := range m.Entries {
			if !zraftEntry(&m.Entries[j]) {
				e := &m.Entries[j]
				return ReasonEntry, fmt.Sprintf("%s carries entry %d of type %s (client %d, series %d, %d bytes)",
					m.Type, e.Index, e.Type, e.ClientID, e.SeriesID, len(e.Cmd))
			}
		}
	}
	return "", ""
}

// zraftEntry reports whether e is a log entry zraft's members write: an
// empty entry (a new leader's no-op, or metadata), or a command proposed
// with dragonboat's no-op session and encoded without compression. Others
// would reach code in dragonboat that panics on them (an unmanaged entry
// with a payload or without a proposal key, a payload with an unknown
// encoding header). A membership change (zraft member add/remove) must
// decode as one.
func zraftEntry(e *pb.Entry) bool {
	switch e.Type {
	case pb.ConfigChangeEntry:
		return e.ClientID == client.NotSessionManagedClientID && len(e.Cmd) > 0 && validConfigChange(e.Cmd)
	case pb.ApplicationEntry, pb.MetadataEntry:
		return len(e.Cmd) == 0 && e.ClientID == client.NotSessionManagedClientID
	case pb.EncodedEntry:
		return e.ClientID != client.NotSessionManagedClientID && e.SeriesID == client.NoOPSeriesID &&
			e.Key != 0 && len(e.Cmd) >= 2 && e.Cmd[0] == encodedV0Plain
	default:
		return false
	}
}

// validConfigChange reports whether b decodes as a membership change of a
// kind zraft makes (adding or removing a voting member).
func validConfigChange(b []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	var cc pb.ConfigChange
	if err := cc.Unmarshal(b); err != nil {
		return false
	}
	return (cc.Type == pb.AddNode || cc.Type == pb.RemoveNode) && cc.ReplicaID != 0
}

// encodedV0Plain is the header byte dragonboat gives a proposal's payload
// without compression (version 0, no compression, no session flag).
const encodedV0Plain = 0

// networkType reports whether a message of type mt travels between members:
// not a local event of a replica (ticks, elections, unreachability,
// snapshot status), not InstallSnapshot (which arrives as chunks) and not a
// type this dragonboat does not know.
func networkType(mt pb.MessageType) bool {
	switch mt {
	case pb.LocalTick, pb.Election, pb.LeaderHeartbeat, pb.Unreachable, pb.SnapshotStatus,
		pb.CheckQuorum, pb.BatchedReadIndex, pb.InstallSnapshot:
		return false
	}
	return mt <= pb.LogQuery
}

func (t *Transport) checkChunk(c *pb.Chunk) (reason, detail string) {
	if c.DeploymentId != t.did {
		return ReasonClusterID, fmt.Sprintf("snapshot chunk with cluster id %016x", c.DeploymentId)
	}
	if c.BinVer != raftio.TransportBinVersion {
		return ReasonVersion, fmt.Sprintf("snapshot chunk version %d", c.BinVer)
	}
	if c.ShardID != t.cfg.ShardID || c.ReplicaID != t.cfg.ReplicaID {
		return ReasonTarget, fmt.Sprintf("snapshot chunk for shard %d replica %d", c.ShardID, c.ReplicaID)
	}
	if c.From == t.cfg.ReplicaID || !t.member(c.From, "") {
		return ReasonSource, fmt.Sprintf("snapshot chunk from %d", c.From)
	}
	return "", ""
}

// member reports whether id is a member whose Raft address is addr ("":
// any address).
func (t *Transport) member(id uint64, addr string) bool {
	if a, ok := t.cfg.Members[id]; ok && (addr == "" || a == addr) {
		return true
	}
	if t.cfg.Lookup != nil {
		if a, ok := t.cfg.Lookup(id); ok && (addr == "" || a == addr) {
			return true
		}
	}
	return false
}

// drop counts a refusal and logs it, at most once a second per reason.
func (t *Transport) drop(reason string, remote net.Addr, detail string) {
	t.cfg.Metrics.Dropped.WithLabelValues(reason).Inc()
	now := time.Now()
	t.logMu.Lock()
	last := t.lastLog[reason]
	logIt := now.Sub(last) >= time.Second
	if logIt {
		t.lastLog[reason] = now
	}
	t.logMu.Unlock()
	if !logIt {
		return
	}
	level := slog.LevelWarn
	if reason == ReasonIdle {
		level = slog.LevelDebug // routine: a peer that went quiet
	}
	from := ""
	if remote != nil {
		from = remote.String()
	}
	t.cfg.Log.Log(context.Background(), level, "raft transport dropped peer input (further drops for this reason within a second are only counted)",
		"reason", reason, "remote", from, "detail", detail)
}

// GetConnection dials target for Raft messages.
func (t *Transport) GetConnection(ctx context.Context, target string) (raftio.IConnection, error) {
	c, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &msgConn{c: c}, nil
}

// GetSnapshotConnection dials target for snapshot chunks.
func (t *Transport) GetSnapshotConnection(ctx context.Context, target string) (raftio.ISnapshotConnection, error) {
	c, err := t.dial(ctx, target)
	if err != nil {
		return nil, err
	}
	return &snapConn{c: c}, nil
}

func (t *Transport) dial(ctx context.Context, target string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout+handshakeTimeout)
	defer cancel()
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, fmt.Errorf("raftnet: dial %s: %w", target, err)
	}
	if t.cfg.CAs == nil {
		return c, nil
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("raftnet: %s: %w", target, err)
	}
	tc := tls.Client(c, &tls.Config{
		Certificates: []tls.Certificate{t.cfg.Cert},
		RootCAs:      t.cfg.CAs,
		ServerName:   host,
		MinVersion:   tls.VersionTLS12,
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("raftnet: tls handshake with %s: %w", target, err)
	}
	return tc, nil
}

// msgConn sends message batches.
type msgConn struct {
	c   net.Conn
	buf []byte
}

func (m *msgConn) Close() { _ = m.c.Close() }

func (m *msgConn) SendMessageBatch(b pb.MessageBatch) error {
	sz := b.SizeUpperLimit()
	if cap(m.buf) < sz {
		m.buf = make([]byte, sz)
	}
	n, err := b.MarshalTo(m.buf[:sz])
	if err != nil {
		return fmt.Errorf("raftnet: marshal batch: %w", err)
	}
	err = writeFrame(m.c, MethodRaft, m.buf[:n], writeTimeout)
	if sz > 4*pieceSize {
		m.buf = nil // do not keep a rare large buffer per connection
	}
	return err
}

// snapConn sends snapshot chunks.
type snapConn struct{ c net.Conn }

func (s *snapConn) SendChunk(ch pb.Chunk) error {
	b, err := ch.Marshal()
	if err != nil {
		return fmt.Errorf("raftnet: marshal chunk: %w", err)
	}
	return writeFrame(s.c, MethodSnapshot, b, writeTimeout)
}

// Close tells the receiver the stream is over and waits briefly for its
// acknowledgement, as dragonboat's transport does.
func (s *snapConn) Close() {
	defer func() { _ = s.c.Close() }()
	_ = s.c.SetWriteDeadline(time.Now().Add(poisonAckTimeout))
	if _, err := s.c.Write(poison[:]); err != nil {
		return
	}
	var ack [2]byte
	_ = s.c.SetReadDeadline(time.Now().Add(poisonAckTimeout))
	_, _ = s.c.Read(ack[:])
}
