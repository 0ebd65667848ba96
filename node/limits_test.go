package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The client-port limits of issue 10 load from JSON (durations as strings)
// and are validated against max_frame.
func TestConfigClientPortLimits(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	body := `{"id": 1, "in_memory": true, "handshake_timeout": "2s", "max_conns_per_source": 5,
	  "max_handshakes": 64, "max_handshakes_per_source": 4, "send_queue_bytes": 8388608,
	  "max_queued_bytes": 67108864, "max_inbox_bytes": 33554432,
	  "members": [{"id": 1, "raft_addr": "127.0.0.1:7201", "client_addr": "127.0.0.1:7101"}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.HandshakeTimeout != 2*time.Second || c.MaxConnsPerSource != 5 || c.MaxHandshakes != 64 ||
		c.MaxHandshakesPerSource != 4 || c.MaxQueuedBytes != 64<<20 || c.MaxInboxBytes != 32<<20 {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"send_queue_bytes":  func(c *Config) { c.SendQueueBytes = c.MaxFrame - 1 },
		"max_inbox_bytes":   func(c *Config) { c.MaxInboxBytes = 1 },
		"max_handshakes":    func(c *Config) { c.MaxHandshakes = 0 },
		"handshake_timeout": func(c *Config) { c.HandshakeTimeout = 0 },
	} {
		c := validConfig()
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Validate = %v, want an ErrConfig naming it", name, err)
		}
	}
}
