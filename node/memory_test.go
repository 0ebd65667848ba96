package node

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// boundedProfile is the configuration docs/operations.md gives for a node
// that must stay under 2 GiB against clients that send whole frames on
// every connection.
func boundedProfile() Config {
	c := DefaultConfig()
	c.MaxConns = 1000
	c.MaxConnsPerSource = 100
	c.MaxFrame = 256 << 10
	c.MaxPayload = 192 << 10
	c.SendQueueBytes = 1 << 20
	c.MaxQueuedBytes = 128 << 20
	c.MaxInboxBytes = 64 << 20
	c.MaxSessionBytes = 1 << 20
	c.MaxProposalBytes = 128 << 20
	c.QuotaBytes = 512 << 20
	return c
}

// The worst-case memory formula of docs/operations.md, computed from the
// config: the default's figure and the bounded profile's are the ones the
// docs state, and the bounded profile is under 2 GiB.
func TestWorstCaseMemory(t *testing.T) {
	docs, err := os.ReadFile(filepath.Join("..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	total, terms := def.WorstCaseMemory()
	for _, term := range terms {
		t.Logf("default: %-70s %6d MiB", term.What, term.Bytes>>20)
	}
	if want := mib(total); !strings.Contains(string(docs), want) {
		t.Errorf("docs/operations.md does not state the default worst case %s", want)
	}
	// Everything but the two connection terms (max_conns × max_frame,
	// which the transport bounds by count) stays under 2 GiB at the
	// defaults.
	if rest := total - terms[1].Bytes - terms[2].Bytes + min(terms[2].Bytes, def.MaxQueuedBytes); rest > 2<<30 {
		t.Errorf("default budgets other than frames per connection add up to %s, over 2 GiB", mib(rest))
	}
	p := boundedProfile()
	if err := validated(p); err != nil {
		t.Fatal(err)
	}
	bounded, _ := p.WorstCaseMemory()
	if bounded > 2<<30 {
		t.Errorf("bounded profile: %s, over 2 GiB", mib(bounded))
	}
	if want := mib(bounded); !strings.Contains(string(docs), want) {
		t.Errorf("docs/operations.md does not state the bounded profile's worst case %s", want)
	}
	noQuota := def
	noQuota.QuotaBytes = 0
	if total, _ := noQuota.WorstCaseMemory(); total != -1 {
		t.Errorf("without a quota the worst case is %d, want -1 (unbounded)", total)
	}
}

func validated(c Config) error {
	v := validConfig()
	c.ID, c.Members, c.InMemory = v.ID, v.Members, true
	return c.Validate()
}

// mib writes n bytes as the docs do: whole MiB with thousands separators,
// such as "43,584 MiB".
func mib(n int64) string {
	d := strconv.FormatInt(n>>20, 10)
	var b []byte
	for i := range len(d) {
		if i > 0 && (len(d)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, d[i])
	}
	return string(b) + " MiB"
}

// The byte budgets and the quota load from JSON and are validated.
func TestConfigByteBudgets(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	body := `{"id": 1, "in_memory": true, "max_sessions_per_source": 7, "max_session_bytes": 2097152,
	  "max_proposal_bytes": 16777216, "quota_bytes": 1048576,
	  "members": [{"id": 1, "raft_addr": "127.0.0.1:7201", "client_addr": "127.0.0.1:7101"}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxSessionsPerSource != 7 || c.MaxSessionBytes != 2<<20 || c.MaxProposalBytes != 16<<20 || c.QuotaBytes != 1<<20 {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"max_session_bytes":       func(c *Config) { c.MaxSessionBytes = c.MaxPayload - 1 },
		"max_proposal_bytes":      func(c *Config) { c.MaxProposalBytes = int64(c.MaxSessionBytes) - 1 },
		"quota_bytes":             func(c *Config) { c.QuotaBytes = -1 },
		"max_sessions_per_source": func(c *Config) { c.MaxSessionsPerSource = 0 },
	} {
		c := validConfig()
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: Validate = %v, want an ErrConfig naming it", name, err)
		}
	}
}
