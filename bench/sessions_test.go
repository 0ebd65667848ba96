package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRunSessions opens a few keep-alive-only sessions against a real
// cluster and checks that their keep-alives are answered and reported.
func TestRunSessions(t *testing.T) {
	c := startCluster(t)
	cfg := DefaultSessionsConfig()
	cfg.Endpoints = c.Endpoints()
	cfg.Sessions = 20
	cfg.Duration = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := RunSessions(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Sessions != 20 || res.Sent == 0 || res.Answered == 0 {
		t.Fatalf("sessions %d, sent %d, answered %d: want 20 sessions with keep-alives answered", res.Sessions, res.Sent, res.Answered)
	}
	if res.Closed != 0 {
		t.Fatalf("%d sessions closed by the server", res.Closed)
	}
	if !(0 < res.P50 && res.P50 <= res.P99 && res.P99 <= res.Max) {
		t.Fatalf("percentiles out of order: p50 %v p99 %v max %v", res.P50, res.P99, res.Max)
	}
	var table bytes.Buffer
	if err := WriteSessionsTable(&table, res); err != nil || !strings.Contains(table.String(), "KA p99") {
		t.Fatalf("table %q, %v", table.String(), err)
	}
}

func TestSessionsConfigValidate(t *testing.T) {
	for _, mod := range []func(*SessionsConfig){
		func(c *SessionsConfig) { c.Endpoints = nil },
		func(c *SessionsConfig) { c.Sessions = 0 },
		func(c *SessionsConfig) { c.Sessions = MaxKeepAliveSessions + 1 },
		func(c *SessionsConfig) { c.OpenRate = 0 },
		func(c *SessionsConfig) { c.Duration = 0 },
		func(c *SessionsConfig) { c.Timeout = 0 },
	} {
		cfg := DefaultSessionsConfig()
		cfg.Endpoints = []string{"127.0.0.1:1"}
		mod(&cfg)
		if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", cfg, err)
		}
	}
}

// TestLeaderMetrics checks that the leader's process figures are taken
// from the member whose zraft_is_leader is 1.
func TestLeaderMetrics(t *testing.T) {
	page := func(leader int, rss float64) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "# HELP zraft_is_leader x\nzraft_is_leader %d\nprocess_resident_memory_bytes %g\nprocess_cpu_seconds_total 12.5\nzraft_messages_in_total{kind=\"KeepAlive\"} 3\n", leader, rss)
		}
	}
	follower := httptest.NewServer(page(0, 1e6))
	defer follower.Close()
	leader := httptest.NewServer(page(1, 2e6))
	defer leader.Close()
	m, err := leaderMetrics(context.Background(), []string{follower.URL, leader.URL})
	if err != nil || !m.ok || m.rss != 2e6 || m.cpu != 12.5 {
		t.Fatalf("got %+v, %v; want the leader's rss 2e6 and cpu 12.5", m, err)
	}
}
