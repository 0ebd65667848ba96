package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.hex and the examples in docs/protocol.md")

const docPath = "../docs/protocol.md"

func seq(n int, first byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = first + byte(i)
	}
	return b
}

func sid() (s SessionID) { copy(s[:], seq(16, 0xA0)); return s }
func sec() (s Secret)    { copy(s[:], seq(32, 0x10)); return s }

// fixtures holds one realistic message per kind; its golden file is named
// after the kind. The examples in docs/protocol.md are these messages.
var fixtures = []Message{
	&CreateSession{Nonce: 42, Secret: sec(), Capabilities: []Capability{{Name: "region", Value: "eu"}, {Name: "worker", Value: "1"}}},
	&ContinueSession{SessionID: sid(), Secret: sec(), Nonce: 43},
	&KeepAlive{Timestamp: 1700000000123456789, AckedUpTo: 7},
	&ClientRequest{RequestID: 5, LowestPending: 3, Payload: []byte("set a=1")},
	&Query{CorrelationID: 9, Consistency: Linearizable, Payload: []byte("get a")},
	&ServerRequestAck{RequestID: 7},
	&CloseSession{Reason: CodeClientClosed},
	&SessionCreated{SessionID: sid(), Nonce: 42, KeepAliveInterval: time.Second, SessionTimeout: 10 * time.Second, LeaderID: 1,
		Members: []Member{{ID: 1, ClientAddr: "10.0.0.1:7001"}, {ID: 2, ClientAddr: "10.0.0.2:7001"}}},
	&SessionContinued{Nonce: 43},
	&SessionRejected{Nonce: 42, Reason: CodeNotLeader, Leader: LeaderHint{ID: 2, ClientAddr: "10.0.0.2:7001"}, Message: "not leader"},
	&SessionClosed{Reason: CodeSessionExpired, Message: "expired"},
	&KeepAliveResponse{Timestamp: 1700000000123456789},
	&ClientResponse{RequestID: 5, Result: []byte("ok")},
	&RequestError{RequestID: 6, Reason: CodeApplication, AppCode: 404, Message: "no such key"},
	&ServerRequest{RequestID: 8, CreatedAt: 1700000000000000000, Payload: []byte("watch a=2")},
	&QueryResponse{CorrelationID: 9, Result: []byte("1")},
	&QueryError{CorrelationID: 10, Reason: CodeClusterUnavailable, Message: "no leader"},
	&Notification{Flags: 0, Payload: []byte("a=2")},
}

// layouts restates the wire layout of every kind, independently of the
// encoder, as docs/protocol.md writes it. The annotator walks encoded frames
// with it, so a disagreement between code and spec fails the golden test.
var layouts = map[Kind][]field{
	KindCreateSession:     {{"nonce", "u64"}, {"secret", "secret"}, {"capabilities", "caps"}},
	KindContinueSession:   {{"session_id", "sid"}, {"secret", "secret"}, {"nonce", "u64"}},
	KindKeepAlive:         {{"timestamp", "i64"}, {"acked_up_to", "u64"}},
	KindClientRequest:     {{"request_id", "u64"}, {"lowest_pending", "u64"}, {"payload", "bytes"}},
	KindQuery:             {{"correlation_id", "u64"}, {"consistency", "consistency"}, {"payload", "bytes"}},
	KindServerRequestAck:  {{"request_id", "u64"}},
	KindCloseSession:      {{"reason", "code"}},
	KindSessionCreated:    {{"session_id", "sid"}, {"nonce", "u64"}, {"keep_alive_interval_ms", "ms"}, {"session_timeout_ms", "ms"}, {"leader_id", "u64"}, {"members", "members"}},
	KindSessionContinued:  {{"nonce", "u64"}},
	KindSessionRejected:   {{"nonce", "u64"}, {"reason", "code"}, {"leader", "leader"}, {"message", "str"}},
	KindSessionClosed:     {{"reason", "code"}, {"leader", "leader"}, {"message", "str"}},
	KindKeepAliveResponse: {{"timestamp", "i64"}},
	KindClientResponse:    {{"request_id", "u64"}, {"result", "bytes"}},
	KindRequestError:      {{"request_id", "u64"}, {"reason", "code"}, {"app_code", "u32"}, {"message", "str"}, {"leader", "leader"}},
	KindServerRequest:     {{"request_id", "u64"}, {"created_at", "i64"}, {"payload", "bytes"}},
	KindQueryResponse:     {{"correlation_id", "u64"}, {"result", "bytes"}},
	KindQueryError:        {{"correlation_id", "u64"}, {"reason", "code"}, {"app_code", "u32"}, {"message", "str"}, {"leader", "leader"}},
	KindNotification:      {{"flags", "flags"}, {"payload", "bytes"}},
}

type field struct{ name, typ string }

// annotator renders a frame as commented hex, one field per line.
type annotator struct {
	b   []byte
	out strings.Builder
	err error
}

func (a *annotator) emit(n int, comment string) []byte {
	if a.err != nil {
		return nil
	}
	if n > len(a.b) {
		a.err = fmt.Errorf("%s needs %d bytes, %d left", comment, n, len(a.b))
		return nil
	}
	p := a.b[:n]
	a.b = a.b[n:]
	for i := 0; i < len(p) || i == 0; i += 16 {
		chunk := p[i:min(i+16, len(p))]
		h := fmt.Sprintf("% x", chunk)
		if i == 0 {
			fmt.Fprintf(&a.out, "%-48s# %s\n", h, comment)
		} else {
			fmt.Fprintf(&a.out, "%s\n", h)
		}
	}
	return p
}

func (a *annotator) u16(name string) int {
	p := a.emit(2, name+": u16")
	if p == nil {
		return 0
	}
	n := int(binary.BigEndian.Uint16(p))
	a.rewrite(fmt.Sprintf("%s: u16 = %d", name, n))
	return n
}

func (a *annotator) str(name string) {
	n := a.u16(name + " length")
	if a.err == nil && n > 0 {
		a.emit(n, fmt.Sprintf("%s = %q", name, a.b[:min(n, len(a.b))]))
	}
}

func (a *annotator) u64(name string) {
	if p := a.emit(8, name+": u64"); p != nil {
		a.rewrite(fmt.Sprintf("%s: u64 = %d", name, binary.BigEndian.Uint64(p)))
	}
}

// rewrite replaces the comment of the line just written (so that emit can be
// called before the value is known).
func (a *annotator) rewrite(comment string) {
	s := strings.TrimSuffix(a.out.String(), "\n")
	i := strings.LastIndex(s, "# ")
	a.out.Reset()
	a.out.WriteString(s[:i] + "# " + comment + "\n")
}

func (a *annotator) field(f field) {
	switch f.typ {
	case "u64":
		a.u64(f.name)
	case "i64":
		if p := a.emit(8, f.name); p != nil {
			a.rewrite(fmt.Sprintf("%s: i64 = %d", f.name, int64(binary.BigEndian.Uint64(p))))
		}
	case "u32":
		if p := a.emit(4, f.name); p != nil {
			a.rewrite(fmt.Sprintf("%s: u32 = %d", f.name, binary.BigEndian.Uint32(p)))
		}
	case "ms":
		if p := a.emit(4, f.name); p != nil {
			v := binary.BigEndian.Uint32(p)
			a.rewrite(fmt.Sprintf("%s: u32 = %d (%v)", f.name, v, time.Duration(v)*time.Millisecond))
		}
	case "code":
		if p := a.emit(1, f.name); p != nil {
			a.rewrite(fmt.Sprintf("%s: u8 = %d (%v)", f.name, p[0], Code(p[0])))
		}
	case "flags":
		if p := a.emit(1, f.name); p != nil {
			a.rewrite(fmt.Sprintf("%s: u8 = 0x%02x", f.name, p[0]))
		}
	case "consistency":
		if p := a.emit(1, f.name); p != nil {
			a.rewrite(fmt.Sprintf("%s: u8 = %d (%v)", f.name, p[0], Consistency(p[0])))
		}
	case "sid":
		a.emit(16, f.name+": 16 bytes")
	case "secret":
		a.emit(32, f.name+": 32 bytes")
	case "str":
		a.str(f.name)
	case "bytes":
		var n int
		if p := a.emit(4, f.name+" length: u32"); p != nil {
			n = int(binary.BigEndian.Uint32(p))
			a.rewrite(fmt.Sprintf("%s length: u32 = %d", f.name, n))
		}
		if a.err == nil && n > 0 {
			a.emit(n, fmt.Sprintf("%s = %q", f.name, a.b[:min(n, len(a.b))]))
		}
	case "leader":
		a.u64(f.name + ".id")
		a.str(f.name + ".client_addr")
	case "members":
		n := a.u16(f.name + " count")
		for i := 0; i < n && a.err == nil; i++ {
			a.u64(fmt.Sprintf("%s[%d].id", f.name, i))
			a.str(fmt.Sprintf("%s[%d].client_addr", f.name, i))
		}
	case "caps":
		n := a.u16(f.name + " count")
		for i := 0; i < n && a.err == nil; i++ {
			a.str(fmt.Sprintf("%s[%d].name", f.name, i))
			a.str(fmt.Sprintf("%s[%d].value", f.name, i))
		}
	default:
		a.err = fmt.Errorf("unknown layout type %q", f.typ)
	}
}

func annotate(frame []byte) (string, error) {
	a := &annotator{b: frame}
	k := Kind(frame[3])
	a.out.WriteString(fmt.Sprintf("# %v: %d bytes\n", k, len(frame)))
	a.emit(2, `signature "ZR"`)
	a.emit(1, "version = 1")
	a.emit(1, fmt.Sprintf("kind = 0x%02x (%v)", byte(k), k))
	layout, ok := layouts[k]
	if !ok {
		return "", fmt.Errorf("no layout for %v", k)
	}
	for _, f := range layout {
		a.field(f)
	}
	if a.err == nil && len(a.b) != 0 {
		a.err = fmt.Errorf("%d bytes left after the layout of %v", len(a.b), k)
	}
	return a.out.String(), a.err
}

// parseHex reads a golden file: hex digits, whitespace, and comments from
// '#' to the end of a line.
func parseHex(s string) ([]byte, error) {
	var digits strings.Builder
	for line := range strings.Lines(s) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(digits.String())
}

func goldenPath(k Kind) string { return filepath.Join("testdata", "golden", k.String()+".hex") }

func TestFixturesCoverEveryKind(t *testing.T) {
	seen := map[Kind]bool{}
	for _, m := range fixtures {
		seen[m.Kind()] = true
	}
	for k := range 256 {
		if Kind(k).Known() != seen[Kind(k)] {
			t.Errorf("%v: known=%v, has fixture=%v", Kind(k), Kind(k).Known(), seen[Kind(k)])
		}
		if Kind(k).Known() != (layouts[Kind(k)] != nil) {
			t.Errorf("%v: known=%v, has layout=%v", Kind(k), Kind(k).Known(), layouts[Kind(k)] != nil)
		}
	}
}

// TestGolden checks every fixture both ways against its golden file: the
// encoding equals the file's bytes, and decoding the file yields the fixture.
func TestGolden(t *testing.T) {
	for _, m := range fixtures {
		t.Run(m.Kind().String(), func(t *testing.T) {
			frame, err := Encode(m)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			text, err := annotate(frame)
			if err != nil {
				t.Fatalf("frame disagrees with the documented layout: %v\n%s", err, text)
			}
			path := goldenPath(m.Kind())
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./codec -run TestGolden -update)", err)
			}
			want, err := parseHex(string(raw))
			if err != nil {
				t.Fatalf("parse %s: %v", path, err)
			}
			if !bytes.Equal(frame, want) {
				t.Errorf("Encode(%+v) =\n% x\nwant (%s)\n% x", m, frame, path, want)
			}
			got, err := Decode(want, nil)
			if err != nil {
				t.Fatalf("Decode(%s): %v", path, err)
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("Decode(%s) = %+v, want %+v", path, got, m)
			}
		})
	}
}

var docBlock = regexp.MustCompile("(?s)<!-- golden:([A-Za-z]+) -->\n```text\n(.*?)```\n")

// TestProtocolDocExamples checks that every worked example in
// docs/protocol.md is its golden file verbatim, and that every kind has one.
// With -update it rewrites the examples from the golden files.
func TestProtocolDocExamples(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	found := map[string]bool{}
	var failed bool
	out := docBlock.ReplaceAllStringFunc(doc, func(block string) string {
		sub := docBlock.FindStringSubmatch(block)
		name, body := sub[1], sub[2]
		found[name] = true
		golden, err := os.ReadFile(filepath.Join("testdata", "golden", name+".hex"))
		if err != nil {
			t.Errorf("example %s: %v", name, err)
			failed = true
			return block
		}
		if body != string(golden) && !*update {
			t.Errorf("example %s in %s differs from its golden file:\n%s\nwant:\n%s", name, docPath, body, golden)
		}
		return "<!-- golden:" + name + " -->\n```text\n" + string(golden) + "```\n"
	})
	for _, m := range fixtures {
		if !found[m.Kind().String()] {
			t.Errorf("%s has no example for %v (add a <!-- golden:%v --> block)", docPath, m.Kind(), m.Kind())
		}
	}
	if *update && !failed && out != doc {
		if err := os.WriteFile(docPath, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
