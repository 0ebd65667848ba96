package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/transport"
)

// Bounds of a keep-alive run.
const (
	// MaxKeepAliveSessions bounds SessionsConfig.Sessions. One connection
	// each: with the machine's cap of 20,000 open files per process, about
	// 19,000 fit in one load generator.
	MaxKeepAliveSessions = 100_000
	// answerWindow is how late a keep-alive answer may come and still
	// count as answered (the keep-alive interval of the default config).
	answerWindow = time.Second
	// maxOpenAttempts bounds the tries to open one session (redirects to
	// the leader, refusals for the creation rate).
	maxOpenAttempts = 50
)

// SessionsConfig describes a keep-alive-only run: Sessions lean sessions
// (one connection each, the wire protocol spoken directly, no client
// library) that only send keep-alives, at the interval the server gives.
type SessionsConfig struct {
	// Endpoints are the members' client addresses; sessions are opened at
	// the leader (redirects are followed). Required.
	Endpoints []string
	// MetricsURLs are the members' /metrics URLs; the leader's (the one
	// with zraft_is_leader 1) gives RSS and CPU. Optional.
	MetricsURLs []string
	// Sessions is the number of sessions; between 1 and
	// MaxKeepAliveSessions. Default 1000.
	Sessions int
	// OpenRate bounds sessions opened per second (stay under the node's
	// session_create_rate). Default 500.
	OpenRate int
	// Duration is how long keep-alives are measured once every session
	// is open. Default 30 s.
	Duration time.Duration
	// Timeout bounds opening one session. Default 10 s.
	Timeout time.Duration
	// TLS, when set, is used for every connection.
	TLS *tls.Config
}

// DefaultSessionsConfig returns the defaults documented on SessionsConfig.
func DefaultSessionsConfig() SessionsConfig {
	return SessionsConfig{Sessions: 1000, OpenRate: 500, Duration: 30 * time.Second, Timeout: 10 * time.Second}
}

// Validate reports the first invalid field, wrapping ErrConfig.
func (c SessionsConfig) Validate() error {
	switch {
	case len(c.Endpoints) == 0:
		return fmt.Errorf("%w: no endpoints", ErrConfig)
	case c.Sessions < 1 || c.Sessions > MaxKeepAliveSessions:
		return fmt.Errorf("%w: sessions %d not in [1, %d]", ErrConfig, c.Sessions, MaxKeepAliveSessions)
	case c.OpenRate < 1:
		return fmt.Errorf("%w: open rate %d < 1", ErrConfig, c.OpenRate)
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return fmt.Errorf("%w: duration %v not in (0, %v]", ErrConfig, c.Duration, MaxDuration)
	case c.Timeout <= 0:
		return fmt.Errorf("%w: timeout %v not positive", ErrConfig, c.Timeout)
	}
	return nil
}

// SessionsResult is the outcome of a keep-alive run.
type SessionsResult struct {
	Sessions int `json:"sessions"`
	// Sent counts keep-alives sent while measuring; Answered those answered
	// within answerWindow; Unanswered the rest.
	Sent       uint64 `json:"sent"`
	Answered   uint64 `json:"answered"`
	Unanswered uint64 `json:"unanswered"`
	// Closed counts sessions the server ended (expired, or refused to
	// continue) while measuring.
	Closed uint64 `json:"closed"`
	// Moved counts sessions continued on another connection after the
	// server closed theirs or told them to go to a new leader (a real
	// client does the same).
	Moved uint64 `json:"moved"`
	// SendErrors counts keep-alives the load generator could not send
	// (its connection was closed or its queue full).
	SendErrors uint64 `json:"send_errors"`
	// P50, P99, P999 and Max are keep-alive answer latencies.
	P50  time.Duration `json:"p50_ns"`
	P99  time.Duration `json:"p99_ns"`
	P999 time.Duration `json:"p999_ns"`
	Max  time.Duration `json:"max_ns"`
	// OpenTime is how long opening every session took.
	OpenTime time.Duration `json:"open_ns"`
	Measured time.Duration `json:"measured_ns"`
	// Leader figures, from its /metrics (zero when none was given): RSS
	// before the sessions were opened and at the end, the resident bytes
	// per session between the two, and the CPU it used while measuring, in
	// cores.
	LeaderRSSBefore  uint64  `json:"leader_rss_before"`
	LeaderRSSAfter   uint64  `json:"leader_rss_after"`
	BytesPerSession  float64 `json:"bytes_per_session"`
	LeaderCPUPercent float64 `json:"leader_cpu_percent"`
	// The leader's Go heap in use (go_memstats_heap_inuse_bytes) before
	// and after, and per session between the two: less noisy than RSS,
	// which also holds freed pages the runtime has not returned.
	LeaderHeapBefore    uint64  `json:"leader_heap_before"`
	LeaderHeapAfter     uint64  `json:"leader_heap_after"`
	HeapBytesPerSession float64 `json:"heap_bytes_per_session"`
}

// lean is one keep-alive-only session.
type lean struct {
	id     codec.SessionID
	secret codec.Secret
	// conn is the session's current connection; its reader replaces it
	// when the session moves (a leader change) or the connection dies.
	conn atomic.Pointer[transport.Conn]
}

// keepAliveRun holds a run's shared counters.
type keepAliveRun struct {
	mu        sync.Mutex
	hist      *hdr.Histogram
	measuring atomic.Bool
	sent      atomic.Uint64
	answered  atomic.Uint64
	closed    atomic.Uint64
	moved     atomic.Uint64
	sendErrs  atomic.Uint64
	cfg       SessionsConfig
	// sending is set while sent keep-alives are counted (the measured
	// duration, without the answer window after it).
	sending atomic.Bool
	// stop ends every session's sender.
	stop chan struct{}
}

// send is a session's sender goroutine: a keep-alive every interval, the
// first after a random part of it so that sessions spread evenly, until
// stop closes.
func (r *keepAliveRun) send(s *lean, interval time.Duration) {
	t := time.NewTimer(time.Duration(mrand.Int64N(int64(interval))))
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		r.keepAlive(s)
		t.Reset(interval)
	}
}

// RunSessions opens cfg.Sessions keep-alive-only sessions, has each send a
// keep-alive every interval (spread evenly over the interval) for
// cfg.Duration, and reports answer latencies, unanswered keep-alives and
// the leader's memory and CPU. progress, when set, is called about once a
// second.
func RunSessions(ctx context.Context, cfg SessionsConfig, progress func(string)) (SessionsResult, error) {
	if err := cfg.Validate(); err != nil {
		return SessionsResult{}, err
	}
	if progress == nil {
		progress = func(string) {}
	}
	res := SessionsResult{Sessions: cfg.Sessions}
	before, _ := leaderMetrics(ctx, cfg.MetricsURLs)
	res.LeaderRSSBefore, res.LeaderHeapBefore = uint64(before.rss), uint64(before.heap)

	run := &keepAliveRun{hist: hdr.New(histMinMicros, histMaxMicros, histSigFigs), stop: make(chan struct{}), cfg: cfg}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex // guards sessions, leader, interval, openErr
		sessions = make([]*lean, 0, cfg.Sessions)
		leader   = cfg.Endpoints[0]
		interval = time.Second
		openErr  error
	)
	defer func() {
		close(run.stop)
		mu.Lock()
		for _, s := range sessions {
			_ = s.conn.Load().Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	// Sessions are opened by openers concurrent workers at cfg.OpenRate;
	// each starts sending keep-alives as soon as it is open, so none
	// expires while the others open.
	openStart := time.Now()
	const openers = 16
	turns := make(chan struct{})
	var owg sync.WaitGroup
	for range openers {
		owg.Add(1)
		go func() {
			defer owg.Done()
			for range turns {
				mu.Lock()
				addr := leader
				mu.Unlock()
				s, iv, addr, err := openLean(ctx, cfg, addr)
				mu.Lock()
				if err != nil {
					if openErr == nil {
						openErr = fmt.Errorf("bench: open session %d: %w", len(sessions)+1, err)
					}
					mu.Unlock()
					continue
				}
				leader, interval = addr, iv
				sessions = append(sessions, s)
				n := len(sessions)
				wg.Add(2)
				mu.Unlock()
				go func() {
					defer wg.Done()
					run.read(ctx, s)
				}()
				go func() {
					defer wg.Done()
					run.send(s, iv)
				}()
				if n%1000 == 0 {
					progress(fmt.Sprintf("opening  %6d/%d sessions", n, cfg.Sessions))
				}
			}
		}()
	}
	gap := time.Second / time.Duration(cfg.OpenRate)
feed:
	for range cfg.Sessions {
		mu.Lock()
		failed := openErr != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		select {
		case turns <- struct{}{}:
		case <-ctx.Done():
			break feed
		}
		time.Sleep(gap)
	}
	close(turns)
	owg.Wait()
	if openErr != nil {
		return res, openErr
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.OpenTime = time.Since(openStart)

	// Let the node settle after the openings, then measure.
	pause(ctx, 2*interval)
	start, _ := leaderMetrics(ctx, cfg.MetricsURLs)
	measureStart := time.Now()
	run.measuring.Store(true)
	run.sending.Store(true)
	end := measureStart.Add(cfg.Duration)
	tk := time.NewTicker(time.Second)
	for now := range tk.C {
		if ctx.Err() != nil || !now.Before(end) {
			break
		}
		progress(fmt.Sprintf("measuring %5.1fs %9d sent %9d answered", now.Sub(measureStart).Seconds(), run.sent.Load(), run.answered.Load()))
	}
	tk.Stop()
	// Answers to the last keep-alives may take up to the window.
	pause(ctx, answerWindow)
	run.measuring.Store(false)
	run.sending.Store(false)
	res.Measured = time.Since(measureStart) - answerWindow
	stop, _ := leaderMetrics(ctx, cfg.MetricsURLs)

	res.Sent, res.Answered, res.Closed, res.SendErrors = run.sent.Load(), run.answered.Load(), run.closed.Load(), run.sendErrs.Load()
	res.Moved = run.moved.Load()
	res.Unanswered = res.Sent - min(res.Sent, res.Answered)
	run.mu.Lock()
	res.P50 = time.Duration(run.hist.ValueAtQuantile(50)) * time.Microsecond
	res.P99 = time.Duration(run.hist.ValueAtQuantile(99)) * time.Microsecond
	res.P999 = time.Duration(run.hist.ValueAtQuantile(99.9)) * time.Microsecond
	res.Max = time.Duration(run.hist.Max()) * time.Microsecond
	run.mu.Unlock()
	if stop.ok {
		res.LeaderRSSAfter, res.LeaderHeapAfter = uint64(stop.rss), uint64(stop.heap)
		if before.ok {
			res.BytesPerSession = (stop.rss - before.rss) / float64(cfg.Sessions)
			res.HeapBytesPerSession = (stop.heap - before.heap) / float64(cfg.Sessions)
		}
		if start.ok {
			res.LeaderCPUPercent = 100 * (stop.cpu - start.cpu) / stop.at.Sub(start.at).Seconds()
		}
	}
	return res, nil
}

// keepAlive sends s's keep-alive; a keep-alive still unanswered from the
// previous turn simply stays unanswered.
func (r *keepAliveRun) keepAlive(s *lean) {
	ts := time.Now().UnixNano()
	frame, err := codec.Encode(&codec.KeepAlive{Timestamp: ts})
	if err != nil {
		return
	}
	err = s.conn.Load().Send(frame)
	if !r.sending.Load() {
		return
	}
	if err != nil {
		r.sendErrs.Add(1)
		return
	}
	r.sent.Add(1)
}

// read is a session's reader goroutine: it records keep-alive answers, and
// when the server closes the connection or sends the session elsewhere it
// continues the session on another connection, as a client would, until
// the run stops or the session is gone.
func (r *keepAliveRun) read(ctx context.Context, s *lean) {
	addr := ""
	for {
		conn := s.conn.Load()
		frame, err := conn.Recv()
		if err == nil {
			var msg codec.Message
			if msg, err = codec.Decode(frame, nil); err != nil {
				continue
			}
			switch m := msg.(type) {
			case *codec.KeepAliveResponse:
				r.answer(m)
				continue
			case *codec.SessionClosed:
				switch m.Reason {
				case codec.CodeNotLeader, codec.CodeShuttingDown, codec.CodeClusterUnavailable, codec.CodeSessionNotFound, codec.CodeSessionMoved:
					addr = m.Leader.ClientAddr
				default:
					if r.measuring.Load() {
						r.closed.Add(1)
					}
					_ = conn.Close()
					return
				}
			default:
				continue
			}
		}
		_ = conn.Close()
		select {
		case <-r.stop:
			return
		default:
		}
		next, err := r.continueAt(ctx, s, addr)
		if err != nil {
			if r.measuring.Load() {
				r.closed.Add(1)
			}
			return
		}
		s.conn.Store(next)
		r.moved.Add(1)
		select {
		case <-r.stop:
			// The run's cleanup may have closed the old connection
			// already: close this one here.
			_ = next.Close()
			return
		default:
		}
		addr = ""
	}
}

// answer records a keep-alive answer.
func (r *keepAliveRun) answer(m *codec.KeepAliveResponse) {
	lat := time.Since(time.Unix(0, m.Timestamp))
	if !r.measuring.Load() || lat > answerWindow {
		return
	}
	r.answered.Add(1)
	r.mu.Lock()
	_ = r.hist.RecordValue(max(lat.Microseconds(), histMinMicros))
	r.mu.Unlock()
}

// continueAt continues s on a new connection: at addr when the server named
// a leader, otherwise at each endpoint in turn.
func (r *keepAliveRun) continueAt(ctx context.Context, s *lean, addr string) (*transport.Conn, error) {
	var lastErr error
	for attempt := range maxOpenAttempts {
		select {
		case <-r.stop:
			return nil, errors.New("bench: run stopped")
		default:
		}
		if addr == "" || attempt > 0 {
			addr = r.cfg.Endpoints[attempt%len(r.cfg.Endpoints)]
			pause(ctx, 100*time.Millisecond)
		}
		conn, reply, err := handshakeLean(ctx, r.cfg, addr, &codec.ContinueSession{SessionID: s.id, Secret: s.secret, Nonce: uint64(attempt + 1)})
		if err != nil {
			lastErr = err
			continue
		}
		switch m := reply.(type) {
		case *codec.SessionContinued:
			return conn, nil
		case *codec.SessionRejected:
			_ = conn.Close()
			lastErr = fmt.Errorf("continue rejected: %v %s", m.Reason, m.Message)
			switch m.Reason {
			case codec.CodeSessionExpired, codec.CodeBadSecret:
				return nil, lastErr
			}
		default:
			_ = conn.Close()
			lastErr = fmt.Errorf("unexpected %v", reply.Kind())
		}
	}
	return nil, lastErr
}

// openLean dials addr and creates a session, following redirects to the
// leader and waiting out creation-rate refusals. It returns the session,
// the keep-alive interval the server asked for and the leader's address.
func openLean(ctx context.Context, cfg SessionsConfig, addr string) (*lean, time.Duration, string, error) {
	var secret codec.Secret
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, 0, "", err
	}
	var lastErr error
	for attempt := range maxOpenAttempts {
		if attempt > 0 {
			pause(ctx, 50*time.Millisecond)
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, "", err
		}
		conn, reply, err := handshakeLean(ctx, cfg, addr, &codec.CreateSession{Nonce: uint64(attempt + 1), Secret: secret})
		if err != nil {
			lastErr = err
			continue
		}
		switch m := reply.(type) {
		case *codec.SessionCreated:
			s := &lean{id: m.SessionID, secret: secret}
			s.conn.Store(conn)
			return s, m.KeepAliveInterval, addr, nil
		case *codec.SessionRejected:
			_ = conn.Close()
			lastErr = fmt.Errorf("session rejected: %v %s", m.Reason, m.Message)
			if m.Leader.ClientAddr != "" {
				addr = m.Leader.ClientAddr
			}
		default:
			_ = conn.Close()
			lastErr = fmt.Errorf("unexpected %v", reply.Kind())
		}
	}
	return nil, 0, "", lastErr
}

// handshakeLean dials addr, sends msg (a CreateSession or ContinueSession)
// and returns the connection with the first reply.
func handshakeLean(ctx context.Context, cfg SessionsConfig, addr string, msg codec.Message) (*transport.Conn, codec.Message, error) {
	dcfg := transport.DefaultDialConfig()
	dcfg.TLS, dcfg.SendQueue, dcfg.Linger = cfg.TLS, 16, 0
	conn, err := transport.Dial(ctx, addr, dcfg)
	if err != nil {
		return nil, nil, err
	}
	frame, err := codec.Encode(msg)
	if err == nil {
		err = conn.Send(frame)
	}
	var reply codec.Message
	if err == nil {
		reply, err = recvWithin(conn, cfg.Timeout)
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, reply, nil
}

// recvWithin returns the next message on conn, or an error after d (the
// connection is then closed).
func recvWithin(conn *transport.Conn, d time.Duration) (codec.Message, error) {
	t := time.AfterFunc(d, func() { _ = conn.Close() })
	defer t.Stop()
	frame, err := conn.Recv()
	if err != nil {
		return nil, err
	}
	return codec.Decode(frame, nil)
}

// nodeMetrics are the figures read from one member's /metrics.
type nodeMetrics struct {
	ok             bool
	rss, cpu, heap float64
	at             time.Time
}

// leaderMetrics reads every URL and returns the leader's figures.
func leaderMetrics(ctx context.Context, urls []string) (nodeMetrics, error) {
	var errs []error
	for _, u := range urls {
		vals, err := scrape(ctx, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if vals["zraft_is_leader"] == 1 {
			return nodeMetrics{ok: true, rss: vals["process_resident_memory_bytes"], cpu: vals["process_cpu_seconds_total"],
				heap: vals["go_memstats_heap_inuse_bytes"], at: time.Now()}, nil
		}
	}
	return nodeMetrics{}, errors.Join(errs...)
}

// scrape fetches a Prometheus text page and returns its unlabelled samples.
func scrape(ctx context.Context, url string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	vals := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			vals[name] = f
		}
	}
	return vals, sc.Err()
}

// WriteSessionsTable prints r as a table.
func WriteSessionsTable(w io.Writer, r SessionsResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "sessions\tsent\tunanswered\tclosed\tmoved\tKA p50\tKA p99\tKA p99.9\tKA max\tleader RSS\tRSS/session\theap/session\tleader CPU\n")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%v\t%v\t%v\t%v\t%.1f MiB\t%.0f B\t%.0f B\t%.1f%%\n", r.Sessions, r.Sent, r.Unanswered, r.Closed, r.Moved,
		r.P50, r.P99, r.P999, r.Max, float64(r.LeaderRSSAfter)/(1<<20), r.BytesPerSession, r.HeapBytesPerSession, r.LeaderCPUPercent)
	return tw.Flush()
}

// WriteSessionsJSON prints r as JSON.
func WriteSessionsJSON(w io.Writer, r SessionsResult) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
