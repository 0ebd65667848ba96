package codec

import (
	"testing"
	"time"
)

func benchAppend(b *testing.B, m Message) {
	lim := DefaultLimits()
	buf := make([]byte, 0, 1024)
	frame, err := Append(buf, m, &lim)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Append(buf[:0], m, &lim); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, m Message) {
	lim := DefaultLimits()
	frame, err := Append(nil, m, &lim)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame, &lim); err != nil {
			b.Fatal(err)
		}
	}
}

func benchClientRequest() Message {
	return &ClientRequest{RequestID: 1000, LowestPending: 990, Payload: make([]byte, 100)}
}

func benchSessionCreated() Message {
	return &SessionCreated{
		SessionID: sid(), Nonce: 42, KeepAliveInterval: time.Second, SessionTimeout: 10 * time.Second, LeaderID: 1,
		Members: []Member{{ID: 1, ClientAddr: "tcp://10.0.0.1:7001"}, {ID: 2, ClientAddr: "tcp://10.0.0.2:7001"}, {ID: 3, ClientAddr: "tcp://10.0.0.3:7001"}},
	}
}

func BenchmarkAppendClientRequest(b *testing.B)  { benchAppend(b, benchClientRequest()) }
func BenchmarkDecodeClientRequest(b *testing.B)  { benchDecode(b, benchClientRequest()) }
func BenchmarkAppendSessionCreated(b *testing.B) { benchAppend(b, benchSessionCreated()) }
func BenchmarkDecodeSessionCreated(b *testing.B) { benchDecode(b, benchSessionCreated()) }
