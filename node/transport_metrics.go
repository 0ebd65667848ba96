package node

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/zraft/zraft/transport"
)

// routerCollector exports the client listener's counters (transport
// RouterStats) at scrape time, so an operator sees connection floods,
// handshake floods and slow consumers as they happen.
type routerCollector struct {
	r *atomic.Pointer[transport.Router] // nil until the listener runs

	refused, handshakeTimeouts, handshakeFailures, slow *prometheus.Desc
	conns, handshaking, sources, queued, accepted       *prometheus.Desc
	reading, readingWaits, frameTimeouts                *prometheus.Desc
}

func newRouterCollector(r *atomic.Pointer[transport.Router]) *routerCollector {
	return &routerCollector{
		r: r,
		refused: prometheus.NewDesc("zraft_client_conns_refused_total",
			"Client connections closed at accept, by the limit reached: max_conns, max_handshakes, max_conns_per_source, max_handshakes_per_source.",
			[]string{"reason"}, nil),
		handshakeTimeouts: prometheus.NewDesc("zraft_client_handshake_timeouts_total",
			"Client connections closed because their handshake took longer than handshake_timeout.", nil, nil),
		handshakeFailures: prometheus.NewDesc("zraft_client_handshake_failures_total",
			"Client handshakes that failed for another reason (wrong protocol, TLS error, oversized frame, peer gone).", nil, nil),
		slow: prometheus.NewDesc("zraft_client_slow_consumers_total",
			"Client connections closed because they stopped reading, by the limit reached: send_queue_bytes, max_queued_bytes (with queue_overdraft_bytes for empty queues), or the queue's frame count.",
			[]string{"reason"}, nil),
		conns: prometheus.NewDesc("zraft_client_conns",
			"Client connections open (handshake completed) now.", nil, nil),
		handshaking: prometheus.NewDesc("zraft_client_handshakes_in_progress",
			"Client connections in their handshake now.", nil, nil),
		sources: prometheus.NewDesc("zraft_client_sources",
			"Distinct client source addresses (IPv4 address or IPv6 /64) connected now.", nil, nil),
		queued: prometheus.NewDesc("zraft_client_queued_bytes",
			"Reply bytes queued on client connections and not yet written, now.", nil, nil),
		accepted: prometheus.NewDesc("zraft_client_conns_accepted_total",
			"TCP connections accepted on the client port (before any limit).", nil, nil),
		reading: prometheus.NewDesc("zraft_client_reading_bytes",
			"Bytes of client frames being read (beyond the first 4 KiB of each) and not yet handed on, now; bounded by max_reading_bytes.", nil, nil),
		readingWaits: prometheus.NewDesc("zraft_client_reading_waits_total",
			"Times a client connection stopped being read because max_reading_bytes was in use.", nil, nil),
		frameTimeouts: prometheus.NewDesc("zraft_client_frame_read_timeouts_total",
			"Client connections closed because a frame larger than 4 KiB was not received whole within frame_read_timeout.", nil, nil),
	}
}

func (c *routerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.refused, c.handshakeTimeouts, c.handshakeFailures, c.slow,
		c.conns, c.handshaking, c.sources, c.queued, c.accepted, c.reading, c.readingWaits, c.frameTimeouts} {
		ch <- d
	}
}

func (c *routerCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r.Load()
	if r == nil {
		return
	}
	st := r.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(c.refused, st.RejectedConns, "max_conns")
	counter(c.refused, st.RejectedHandshakes, "max_handshakes")
	counter(c.refused, st.RejectedSourceConns, "max_conns_per_source")
	counter(c.refused, st.RejectedSourceHandshakes, "max_handshakes_per_source")
	counter(c.handshakeTimeouts, st.HandshakeTimeouts)
	counter(c.handshakeFailures, st.HandshakeFailures)
	counter(c.slow, st.SlowConsumers-st.SlowConsumersNode, "send_queue_bytes")
	counter(c.slow, st.SlowConsumersNode, "max_queued_bytes")
	counter(c.slow, st.QueueFullCloses, "send_queue_frames")
	counter(c.accepted, st.Accepted)
	counter(c.readingWaits, st.ReadingWaits)
	counter(c.frameTimeouts, st.FrameTimeouts)
	gauge(c.reading, st.ReadingBytes)
	gauge(c.conns, st.Active)
	gauge(c.handshaking, st.Handshaking)
	gauge(c.sources, int64(st.Sources))
	gauge(c.queued, st.QueuedBytes)
}

// registerProcessMetrics adds the client listener's collector and the
// standard Go runtime (go_*: heap, GC, goroutines) and process (process_*:
// resident memory, open fds, CPU) collectors to reg.
func registerProcessMetrics(reg prometheus.Registerer, r *atomic.Pointer[transport.Router]) {
	reg.MustRegister(newRouterCollector(r), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Gatherer returns the node's metrics registry, what /metrics serves, so
// that tests and embedding programs can read the metrics without HTTP.
func (n *Node) Gatherer() prometheus.Gatherer { return n.registry }
