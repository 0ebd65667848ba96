package fsm

import (
	"fmt"
	"time"
)

// Config holds the machine's limits. Every replica of a shard must use the
// same Config: the limits decide command outcomes, so replicas with different
// limits would diverge. Start from DefaultConfig.
type Config struct {
	// MaxSessions is the number of live sessions. An OpenSession past it gets
	// StatusTooManySessions. Default 250,000.
	MaxSessions int
	// MaxCapabilities is the number of capabilities one session may declare.
	// More gets StatusInvalid. Default 64, the protocol's MaxCapabilities: a
	// node sets it to its codec limit, so a client only ever meets the
	// protocol's limit (answered TooLarge by the decoder), never this one.
	MaxCapabilities int
	// MaxCapabilityBytes bounds the length of each capability name and value.
	// Longer gets StatusInvalid. Default 256, the protocol's MaxString (see
	// MaxCapabilities).
	MaxCapabilityBytes int
	// MinSessionTimeout and MaxSessionTimeout bound the timeout an
	// OpenSession may ask for; outside the range gets StatusInvalid.
	// Defaults 1 s and 24 h.
	MinSessionTimeout time.Duration
	MaxSessionTimeout time.Duration
	// MaxCachedResponses is the number of responses one session may hold in
	// its cache (requests answered but not yet below the client's watermark).
	// A new request past it gets StatusTooManyInFlight and is not executed.
	// Default 1024.
	MaxCachedResponses int
	// MaxResultBytes bounds an application result (or error message) that is
	// cached. A larger result is replaced by StatusResultTooLarge; the
	// command's state changes stand. Default 1 MiB.
	MaxResultBytes int
	// MaxPendingServerRequests is the number of unacknowledged server requests
	// per session. Context.Emit to a full session returns ErrQueueFull;
	// selector-addressed work skips full sessions. Default 1024.
	MaxPendingServerRequests int
	// MaxServerRequestBytes bounds one server request's payload; Emit returns
	// ErrPayloadTooLarge past it. Default 1 MiB.
	MaxServerRequestBytes int
	// MaxUnassigned bounds the queue of selector-addressed work waiting for a
	// capable session with room. Emit returns ErrQueueFull when it is full;
	// work moved off a closing session that does not fit is dropped and
	// reported to the Application. Default 4096.
	MaxUnassigned int
	// MaxTombstones is how many removed session ids are remembered so that a
	// late request learns "expired" or "closed" instead of "not found". The
	// oldest is forgotten first. Default 65,536.
	MaxTombstones int
	// MaxBatch bounds the number of entries in one RecordLiveness or
	// AckServerRequests command; a larger command gets StatusInvalid and
	// changes nothing. Default 65,536.
	MaxBatch int
	// MaxPayloadBytes bounds a command payload (client request or application
	// command); a larger one gets StatusInvalid and is not executed.
	// Default 4 MiB.
	MaxPayloadBytes int
	// QuotaBytes is the byte quota of the replicated application state
	// (0: none). The machine does not measure the application's state: it
	// hands the quota to the application (Context.Quota), which refuses
	// writes that would grow its state past it with an error matching
	// ErrQuotaExceeded (StatusQuotaExceeded), while reads, deletes and
	// session traffic keep working. Like every limit here it must be the
	// same on every replica, so the refusal is the same everywhere.
	// Default 0 (a node sets its quota_bytes).
	QuotaBytes int64
}

// DefaultConfig returns the default limits documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		MaxSessions:              250_000,
		MaxCapabilities:          64,
		MaxCapabilityBytes:       256,
		MinSessionTimeout:        time.Second,
		MaxSessionTimeout:        24 * time.Hour,
		MaxCachedResponses:       1024,
		MaxResultBytes:           1 << 20,
		MaxPendingServerRequests: 1024,
		MaxServerRequestBytes:    1 << 20,
		MaxUnassigned:            4096,
		MaxTombstones:            65_536,
		MaxBatch:                 65_536,
		MaxPayloadBytes:          4 << 20,
	}
}

// Validate reports the first limit that is not usable.
func (c Config) Validate() error {
	positive := []struct {
		name string
		v    int
	}{
		{"MaxSessions", c.MaxSessions},
		{"MaxCapabilities", c.MaxCapabilities},
		{"MaxCapabilityBytes", c.MaxCapabilityBytes},
		{"MaxCachedResponses", c.MaxCachedResponses},
		{"MaxResultBytes", c.MaxResultBytes},
		{"MaxPendingServerRequests", c.MaxPendingServerRequests},
		{"MaxServerRequestBytes", c.MaxServerRequestBytes},
		{"MaxUnassigned", c.MaxUnassigned},
		{"MaxTombstones", c.MaxTombstones},
		{"MaxBatch", c.MaxBatch},
		{"MaxPayloadBytes", c.MaxPayloadBytes},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("fsm: config %s must be positive, got %d", p.name, p.v)
		}
	}
	if c.QuotaBytes < 0 {
		return fmt.Errorf("fsm: config QuotaBytes must not be negative, got %d", c.QuotaBytes)
	}
	if c.MinSessionTimeout <= 0 || c.MaxSessionTimeout < c.MinSessionTimeout {
		return fmt.Errorf("fsm: config session timeout range [%v, %v] is empty or not positive",
			c.MinSessionTimeout, c.MaxSessionTimeout)
	}
	return nil
}
