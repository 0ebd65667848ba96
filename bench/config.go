// Package bench is the load generator behind `zraft bench`: it drives a
// zraft cluster through the client library (RunZraft) and, for comparison,
// raw dragonboat with the same Raft settings in this process (RunBaseline),
// and reports throughput and latency percentiles for both (WriteTable,
// WriteJSON).
//
// Both runs issue the same operations: a share Config.ReadRatio of
// linearizable reads of one key and the rest writes of one key with a
// Config.PayloadSize value, over Config.Keys keys picked at random. Every
// worker goroutine keeps one operation in flight, back to back; there are
// Sessions × InFlight workers. When reads are asked for, every key is written
// once before the clock starts so that reads find values.
//
// Latencies are recorded in HDR histograms (1 µs to 60 s, 3 significant
// figures), one per worker, merged at the end. A worker's histogram takes
// about 140 KB, which is why the number of workers is bounded.
package bench

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
)

// Limits on a Config, so that a typo cannot ask for a million goroutines or
// gigabytes of histograms.
const (
	// MaxSessions bounds Config.Sessions.
	MaxSessions = 4096
	// MaxInFlight bounds Config.InFlight; it is the client library's default
	// pending-call limit and the server's default per-session limit.
	MaxInFlight = 1024
	// MaxWorkers bounds Sessions × InFlight (about 285 MB of histograms).
	MaxWorkers = 2048
	// MaxPayloadSize bounds Config.PayloadSize: the kv application's default
	// value limit.
	MaxPayloadSize = 64 << 10
	// MaxKeys bounds Config.Keys: the kv application's default key limit.
	MaxKeys = 1_000_000
	// MaxDuration bounds Config.Duration and Config.Warmup each.
	MaxDuration = time.Hour
	// MaxWatchers bounds Config.Watchers: the kv application's default
	// limit of watchers per key.
	MaxWatchers = 4096
)

// ErrConfig is wrapped by every error Validate returns.
var ErrConfig = errors.New("bench: invalid config")

// Config describes one run. Build it with DefaultConfig and change what
// differs; the Run functions call Validate first.
type Config struct {
	// Endpoints are the client addresses ("host:port") of the cluster's
	// members, for RunZraft. RunBaseline ignores them. Default none.
	Endpoints []string
	// Sessions is the number of client sessions (one client.Conn each) for
	// RunZraft; for RunBaseline it only multiplies InFlight. Default 8.
	Sessions int
	// InFlight is the number of operations each session keeps in flight,
	// each issued by its own goroutine back to back. Default 8.
	InFlight int
	// Duration is how long operations are measured, after Warmup.
	// Default 10 s.
	Duration time.Duration
	// Warmup is how long operations run before measuring starts; their
	// results are ignored. Default 1 s; zero is allowed.
	Warmup time.Duration
	// PayloadSize is the size in bytes of the value each write stores.
	// Default 100.
	PayloadSize int
	// ReadRatio is the share (0 to 1) of operations that are linearizable
	// reads of one key (a kv get query); the rest are writes (kv set
	// commands). Default 0.
	ReadRatio float64
	// Keys is the size of the key space operations pick from at random.
	// Default 1000.
	Keys int
	// Baseline asks the caller (the CLI) to run RunBaseline as well. The Run
	// functions do not read it; it is recorded in Result.Config.
	Baseline bool
	// BaselineDir is where RunBaseline creates its (temporary, removed
	// afterwards) data directory; empty means the system's temp directory.
	BaselineDir string
	// Timeout bounds each operation. Default 5 s, the node's default
	// proposal timeout.
	Timeout time.Duration
	// MaxOps bounds the operations issued in one run (warm-up included,
	// preloading excluded), so that a run ends even if the clock misbehaves.
	// Default 100,000,000.
	MaxOps uint64
	// Watchers is the number of sessions RunWatch opens to watch one hot
	// key; the other runs ignore it. Default 0.
	Watchers int
	// HotInFlight is the number of writes to the hot key RunWatch keeps in
	// flight (one session). Default 4.
	HotInFlight int
	// TLS, when set, is passed to every client.Dial of RunZraft (see
	// client.WithTLS). Default nil: plaintext.
	TLS *tls.Config `json:"-"`
}

// DefaultConfig returns the defaults documented on Config's fields.
func DefaultConfig() Config {
	return Config{
		Sessions:    8,
		InFlight:    8,
		Duration:    10 * time.Second,
		Warmup:      time.Second,
		PayloadSize: 100,
		ReadRatio:   0,
		Keys:        1000,
		Timeout:     5 * time.Second,
		MaxOps:      100_000_000,
		HotInFlight: 4,
	}
}

func configErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

// Validate reports the first problem with c. Endpoints are not checked here
// (RunBaseline does not need them); RunZraft checks them.
func (c Config) Validate() error {
	switch {
	case c.Sessions < 1 || c.Sessions > MaxSessions:
		return configErr("sessions must be 1..%d, got %d", MaxSessions, c.Sessions)
	case c.InFlight < 1 || c.InFlight > MaxInFlight:
		return configErr("in-flight must be 1..%d, got %d", MaxInFlight, c.InFlight)
	case c.Sessions*c.InFlight > MaxWorkers:
		return configErr("sessions × in-flight must be at most %d, got %d", MaxWorkers, c.Sessions*c.InFlight)
	case c.Duration <= 0 || c.Duration > MaxDuration:
		return configErr("duration must be positive and at most %v, got %v", MaxDuration, c.Duration)
	case c.Warmup < 0 || c.Warmup > MaxDuration:
		return configErr("warm-up must be 0..%v, got %v", MaxDuration, c.Warmup)
	case c.PayloadSize < 0 || c.PayloadSize > MaxPayloadSize:
		return configErr("payload size must be 0..%d bytes, got %d", MaxPayloadSize, c.PayloadSize)
	case !(c.ReadRatio >= 0 && c.ReadRatio <= 1): // also rejects NaN
		return configErr("read ratio must be between 0 and 1, got %v", c.ReadRatio)
	case c.Keys < 1 || c.Keys > MaxKeys:
		return configErr("keys must be 1..%d, got %d", MaxKeys, c.Keys)
	case c.Timeout <= 0:
		return configErr("timeout must be positive, got %v", c.Timeout)
	case c.MaxOps == 0:
		return configErr("max ops must be positive")
	case c.Watchers < 0 || c.Watchers > MaxWatchers:
		return configErr("watchers must be 0..%d, got %d", MaxWatchers, c.Watchers)
	case c.HotInFlight < 1 || c.HotInFlight > MaxInFlight:
		return configErr("hot-key writes in flight must be 1..%d, got %d", MaxInFlight, c.HotInFlight)
	}
	return nil
}

// workers is the number of load goroutines a run starts.
func (c Config) workers() int { return c.Sessions * c.InFlight }
