package kv

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/fsm"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*.hex and the examples in docs/kv.md")

const kvDocPath = "../docs/kv.md"

// kvLayouts restate docs/kv.md's layouts independently of the encoders. The
// annotator walks each golden example with its layout, so an encoding that
// disagrees with the document fails the test.
var kvLayouts = map[string][]kvField{
	"Set":                 {{"version", "version"}, {"op", "op"}, {"key", "blob"}, {"value", "blob"}},
	"Delete":              {{"version", "version"}, {"op", "op"}, {"key", "blob"}},
	"CompareAndSet":       {{"version", "version"}, {"op", "op"}, {"key", "blob"}, {"expected", "blob"}, {"value", "blob"}},
	"Incr":                {{"version", "version"}, {"op", "op"}, {"key", "blob"}, {"delta", "i64"}},
	"Watch":               {{"version", "version"}, {"op", "op"}, {"key", "blob"}},
	"Unwatch":             {{"version", "version"}, {"op", "op"}, {"key", "blob"}},
	"Get":                 {{"version", "version"}, {"op", "op"}, {"key", "blob"}},
	"Stats":               {{"version", "version"}, {"op", "op"}},
	"RevisionResult":      {{"revision", "u64"}},
	"IncrResult":          {{"value", "i64"}},
	"GetResult":           {{"revision", "u64"}, {"value", "rest"}},
	"StatsResult":         {{"keys", "u64"}, {"watches", "u64"}, {"revision", "u64"}, {"cancelled_watches", "u64"}},
	"NotificationValue":   {{"kind", "nkind"}, {"revision", "u64"}, {"prev_revision", "u64"}, {"key", "blob"}, {"value", "blob"}},
	"NotificationDeleted": {{"kind", "nkind"}, {"revision", "u64"}, {"prev_revision", "u64"}, {"key", "blob"}},
	"WatchResultAbsent":   {{"revision", "u64"}, {"exists", "bool"}},
	"WatchResultValue":    {{"revision", "u64"}, {"exists", "bool"}, {"value", "blob"}},
	"ErrorNotFound":       {{"header", "header"}, {"request_id", "u64"}, {"reason", "code"}, {"app_code", "appcode"}, {"message", "str16"}, {"leader.id", "u64"}, {"leader.client_addr", "str16"}},
}

type kvField struct{ name, typ string }

type kvAnnotator struct {
	b   []byte
	out strings.Builder
	err error
}

func (a *kvAnnotator) emit(n int, comment string) []byte {
	if a.err != nil {
		return nil
	}
	if n < 0 || n > len(a.b) {
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

// uvarint reads a canonical unsigned LEB128 length, as docs/kv.md §2 states
// it: 7 bits per byte, least significant group first, high bit set on every
// byte but the last, and no superfluous zero groups.
func (a *kvAnnotator) uvarint(name string) int {
	var v uint64
	var n int
	for n = 0; n < len(a.b) && n < 10; n++ {
		v |= uint64(a.b[n]&0x7f) << (7 * n)
		if a.b[n] < 0x80 {
			break
		}
	}
	if n == len(a.b) || n == 10 || (n > 0 && a.b[n] == 0) {
		a.err = fmt.Errorf("%s: bad uvarint", name)
		return 0
	}
	a.emit(n+1, fmt.Sprintf("%s: uvarint = %d", name, v))
	return int(v)
}

func (a *kvAnnotator) field(f kvField) {
	switch f.typ {
	case "version":
		if p := a.emit(1, ""); p != nil {
			a.rewrite(fmt.Sprintf("%s = %d", f.name, p[0]))
		}
	case "op":
		if p := a.emit(1, ""); p != nil {
			a.rewrite(fmt.Sprintf("%s = 0x%02x (%v)", f.name, p[0], Op(p[0])))
		}
	case "nkind":
		if p := a.emit(1, ""); p != nil {
			name := map[byte]string{1: "value", 2: "deleted"}[p[0]]
			a.rewrite(fmt.Sprintf("%s = %d (%s)", f.name, p[0], name))
		}
	case "blob":
		n := a.uvarint(f.name + " length")
		if a.err == nil && n > 0 {
			a.emit(n, fmt.Sprintf("%s = %q", f.name, a.b[:min(n, len(a.b))]))
		}
	case "bool":
		if p := a.emit(1, ""); p != nil {
			a.rewrite(fmt.Sprintf("%s = %d", f.name, p[0]))
		}
	case "rest":
		a.emit(len(a.b), fmt.Sprintf("%s = %q (the rest of the result)", f.name, a.b))
	case "u64":
		if p := a.emit(8, ""); p != nil {
			a.rewrite(fmt.Sprintf("%s: u64 = %d", f.name, binary.BigEndian.Uint64(p)))
		}
	case "i64":
		if p := a.emit(8, ""); p != nil {
			a.rewrite(fmt.Sprintf("%s: i64 = %d", f.name, int64(binary.BigEndian.Uint64(p))))
		}
	case "header":
		if p := a.emit(4, ""); p != nil {
			a.rewrite(fmt.Sprintf("protocol.md header: \"ZR\", version 1, kind 0x%02x (%v)", p[3], codec.Kind(p[3])))
		}
	case "code":
		if p := a.emit(1, ""); p != nil {
			a.rewrite(fmt.Sprintf("%s: u8 = %d (%v)", f.name, p[0], codec.Code(p[0])))
		}
	case "appcode":
		if p := a.emit(4, ""); p != nil {
			c := binary.BigEndian.Uint32(p)
			a.rewrite(fmt.Sprintf("%s: u32 = %d (%v)", f.name, c, ErrorFromCode(c, "")))
		}
	case "str16":
		var n int
		if p := a.emit(2, ""); p != nil {
			n = int(binary.BigEndian.Uint16(p))
			a.rewrite(fmt.Sprintf("%s length: u16 = %d", f.name, n))
		}
		if a.err == nil && n > 0 {
			a.emit(n, fmt.Sprintf("%s = %q", f.name, a.b[:min(n, len(a.b))]))
		}
	default:
		a.err = fmt.Errorf("unknown layout type %q", f.typ)
	}
}

func (a *kvAnnotator) rewrite(comment string) {
	s := strings.TrimSuffix(a.out.String(), "\n")
	i := strings.LastIndex(s, "# ")
	a.out.Reset()
	a.out.WriteString(s[:i] + "# " + comment + "\n")
}

func annotateKV(name string, b []byte) (string, error) {
	layout, ok := kvLayouts[name]
	if !ok {
		return "", fmt.Errorf("no layout for %s", name)
	}
	a := &kvAnnotator{b: b}
	fmt.Fprintf(&a.out, "# %s: %d bytes\n", name, len(b))
	for _, f := range layout {
		a.field(f)
	}
	if a.err == nil && len(a.b) != 0 {
		a.err = fmt.Errorf("%d bytes left after the layout of %s", len(a.b), name)
	}
	return a.out.String(), a.err
}

func parseHex(s string) ([]byte, error) {
	var digits strings.Builder
	for line := range strings.Lines(s) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	return hex.DecodeString(digits.String())
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name+".hex") }

// golden checks b against the golden file name (rewriting it with -update)
// and returns the file's bytes.
func golden(t *testing.T, name string, b []byte) []byte {
	t.Helper()
	text, err := annotateKV(name, b)
	if err != nil {
		t.Fatalf("%s disagrees with the documented layout: %v\n%s", name, err, text)
	}
	path := goldenPath(name)
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
		t.Fatalf("%v (run go test ./kv -run 'TestGolden|TestKVDocExamples' -update)", err)
	}
	want, err := parseHex(string(raw))
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("%s: got\n% x\nwant (%s)\n% x", name, b, path, want)
	}
	return want
}

// goldenServer is a kv Store behind an fsm.Machine, fed the golden command
// bytes as a node would feed a client's requests.
type goldenServer struct {
	t     *testing.T
	m     *fsm.Machine
	sess  fsm.SessionID
	next  uint64
	now   fsm.ClusterTime
	notes []fsm.Note
}

func (g *goldenServer) ServerRequestAdded(_ fsm.SessionID, r fsm.ServerRequest) {
	g.t.Errorf("the store queued a server request: %q", r.Payload)
}
func (g *goldenServer) Notes(list []fsm.Note)                          { g.notes = append(g.notes, list...) }
func (g *goldenServer) SessionRemoved(fsm.SessionID, fsm.RemoveReason) {}

func (g *goldenServer) apply(cmd fsm.Command) fsm.Outcome {
	g.t.Helper()
	r, err := g.m.Apply(fsm.EncodeCommand(nil, cmd))
	if err != nil {
		g.t.Fatal(err)
	}
	o, err := fsm.DecodeResult(r)
	if err != nil {
		g.t.Fatal(err)
	}
	return o
}

// request submits payload as the session's next request (ids from 1).
func (g *goldenServer) request(payload []byte) (uint64, fsm.Outcome) {
	g.next++
	g.now = g.now.Add(time.Millisecond)
	return g.next, g.apply(fsm.ClientRequest{Time: g.now, Session: g.sess, RequestID: g.next, LowestPending: g.next, Payload: payload})
}

// TestGolden checks every documented kv encoding both ways: the encoder (for
// commands and queries) or the store itself (for results, notifications and
// errors) produces exactly the golden bytes, the store accepts the golden
// command bytes, and the decoders turn the golden bytes back into the values
// they were made from.
func TestGolden(t *testing.T) {
	store, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	g := &goldenServer{t: t, now: 1_700_000_000_000_000_000}
	g.m, err = fsm.New(store, fsm.DefaultConfig(), g)
	if err != nil {
		t.Fatal(err)
	}
	g.sess[15] = 1
	if o := g.apply(fsm.OpenSession{Time: g.now, ID: g.sess, Nonce: 1, Timeout: time.Minute}); o.Status != fsm.StatusSessionOpened {
		t.Fatalf("open: %+v", o)
	}

	// Commands and queries: encoder → golden, golden → decoder.
	cmds := []struct {
		name string
		enc  []byte
		want command
	}{
		{"Watch", EncodeWatch("a"), command{op: OpWatch, key: "a"}},
		{"Set", EncodeSet("a", []byte("hello")), command{op: OpSet, key: "a", value: []byte("hello")}},
		{"Incr", EncodeIncr("n", -5), command{op: OpIncr, key: "n", delta: -5}},
		{"CompareAndSet", EncodeCompareAndSet("a", []byte("hello"), []byte("world")), command{op: OpCompareAndSet, key: "a", expected: []byte("hello"), value: []byte("world")}},
		{"Get", EncodeGet("a"), command{op: OpGet, key: "a"}},
		{"Delete", EncodeDelete("a"), command{op: OpDelete, key: "a"}},
		{"Stats", EncodeStats(), command{op: OpStats}},
		{"Unwatch", EncodeUnwatch("a"), command{op: OpUnwatch, key: "a"}},
	}
	wire := map[string][]byte{}
	for _, c := range cmds {
		wire[c.name] = golden(t, c.name, c.enc)
		got, err := decodeCommand(wire[c.name])
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("decode %s = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}

	// The store, fed the golden bytes, answers with the documented results.
	ok := func(name string, o fsm.Outcome) []byte {
		t.Helper()
		if o.Status != fsm.StatusOK {
			t.Fatalf("%s: %+v", name, o)
		}
		return o.Payload
	}
	_, o := g.request(wire["Watch"])
	if r, err := DecodeWatchResult(golden(t, "WatchResultAbsent", ok("Watch", o))); err != nil || r.Exists || r.Revision != 0 {
		t.Errorf("WatchResultAbsent decodes to %+v, %v", r, err)
	}
	_, o = g.request(wire["Set"])
	if rev, err := DecodeRevision(ok("Set", o)); err != nil || rev != 1 {
		t.Errorf("set: revision %d, %v", rev, err)
	}
	_, o = g.request(wire["Watch"])
	if r, err := DecodeWatchResult(golden(t, "WatchResultValue", ok("Watch", o))); err != nil || !r.Exists || r.Revision != 1 || string(r.Value) != "hello" {
		t.Errorf("WatchResultValue decodes to %+v, %v", r, err)
	}
	_, o = g.request(wire["Incr"])
	if v, err := DecodeIncrResult(golden(t, "IncrResult", ok("Incr", o))); err != nil || v != -5 {
		t.Errorf("IncrResult decodes to %d, %v; want -5", v, err)
	}
	_, o = g.request(wire["CompareAndSet"])
	if rev, err := DecodeRevision(golden(t, "RevisionResult", ok("CompareAndSet", o))); err != nil || rev != 3 {
		t.Errorf("RevisionResult decodes to %d, %v; want 3", rev, err)
	}
	res, err := g.m.Query(wire["Get"])
	if err != nil {
		t.Fatal(err)
	}
	if v, rev, err := DecodeGetResult(golden(t, "GetResult", res)); err != nil || rev != 3 || string(v) != "world" {
		t.Errorf("GetResult decodes to %q, %d, %v", v, rev, err)
	}
	_, o = g.request(wire["Delete"])
	if rev, err := DecodeRevision(ok("Delete", o)); err != nil || rev != 4 {
		t.Errorf("delete: revision %d, %v", rev, err)
	}
	res, err = g.m.Query(wire["Stats"])
	if err != nil {
		t.Fatal(err)
	}
	wantStats := Stats{Keys: 1, Watches: 1, Revision: 4}
	if st, err := DecodeStats(golden(t, "StatsResult", res)); err != nil || st != wantStats {
		t.Errorf("StatsResult decodes to %+v, %v; want %+v", st, err, wantStats)
	}

	// Notifications: the watch saw set, compare-and-set and delete of "a".
	if len(g.notes) != 3 {
		t.Fatalf("notifications %d, want 3", len(g.notes))
	}
	wantValue := Notification{Key: "a", Value: []byte("world"), Revision: 3, PrevRevision: 1}
	wantDeleted := Notification{Key: "a", Deleted: true, Revision: 4, PrevRevision: 3}
	for _, c := range []struct {
		name string
		got  []byte
		want Notification
	}{{"NotificationValue", g.notes[1].Payload, wantValue}, {"NotificationDeleted", g.notes[2].Payload, wantDeleted}} {
		if !bytes.Equal(c.got, encodeNotification(c.want)) {
			t.Errorf("%s: the store emitted % x, the encoder makes % x", c.name, c.got, encodeNotification(c.want))
		}
		n, err := DecodeNotification(golden(t, c.name, c.got))
		if err != nil || !reflect.DeepEqual(n, c.want) {
			t.Errorf("%s decodes to %+v, %v; want %+v", c.name, n, err, c.want)
		}
	}

	// Errors: deleting "a" again fails with NotFound; the node sends it as
	// RequestError(Application) with the application code and message.
	id, o := g.request(wire["Delete"])
	if o.Status != fsm.StatusAppError {
		t.Fatalf("second delete: %+v", o)
	}
	frame, err := codec.Encode(&codec.RequestError{RequestID: id, Reason: codec.CodeApplication, AppCode: o.AppCode, Message: o.Message})
	if err != nil {
		t.Fatal(err)
	}
	m, err := codec.Decode(golden(t, "ErrorNotFound", frame), nil)
	if err != nil {
		t.Fatal(err)
	}
	re := m.(*codec.RequestError)
	if e := ErrorFromCode(re.AppCode, re.Message); re.Reason != codec.CodeApplication || e.Error() != `kv: key not found: "a"` || !isNotFound(e) {
		t.Errorf("ErrorNotFound decodes to %+v (%v)", re, e)
	}
	if _, o := g.request(wire["Unwatch"]); len(ok("Unwatch", o)) != 0 {
		t.Errorf("unwatch result %q, want empty", o.Payload)
	}
	for name := range kvLayouts {
		if _, err := os.Stat(goldenPath(name)); err != nil {
			t.Errorf("layout %s has no golden file: %v", name, err)
		}
	}
}

func isNotFound(err error) bool {
	var e interface{ AppCode() uint32 }
	return errors.As(err, &e) && e.AppCode() == ErrNotFound.AppCode()
}

var kvDocBlock = regexp.MustCompile("(?s)<!-- kv-golden:([A-Za-z]+) -->\n```text\n(.*?)```\n")

// TestKVDocExamples checks that every worked example in docs/kv.md is its
// golden file verbatim and that every golden file is shown there. With
// -update it rewrites the examples from the golden files.
func TestKVDocExamples(t *testing.T) {
	raw, err := os.ReadFile(kvDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	found := map[string]bool{}
	var failed bool
	out := kvDocBlock.ReplaceAllStringFunc(doc, func(block string) string {
		sub := kvDocBlock.FindStringSubmatch(block)
		name, body := sub[1], sub[2]
		found[name] = true
		g, err := os.ReadFile(goldenPath(name))
		if err != nil {
			t.Errorf("example %s: %v", name, err)
			failed = true
			return block
		}
		if body != string(g) && !*update {
			t.Errorf("example %s in %s differs from its golden file:\n%s\nwant:\n%s", name, kvDocPath, body, g)
		}
		// The example must also parse as the documented layout.
		b, err := parseHex(body)
		if err == nil {
			_, err = annotateKV(name, b)
		}
		if err != nil && !*update {
			t.Errorf("example %s does not follow its layout: %v", name, err)
		}
		return "<!-- kv-golden:" + name + " -->\n```text\n" + string(g) + "```\n"
	})
	for name := range kvLayouts {
		if !found[name] {
			t.Errorf("%s has no example %s (add a <!-- kv-golden:%s --> block)", kvDocPath, name, name)
		}
	}
	if *update && !failed && out != doc {
		if err := os.WriteFile(kvDocPath, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

var uvarintRow = regexp.MustCompile("(?m)^\\| +([0-9]+) +\\| `([0-9a-f ]+)` +\\|$")

// TestKVDocUvarintTable checks the uvarint examples of docs/kv.md §2, and
// that the decoder refuses the non-canonical forms the document says it
// refuses.
func TestKVDocUvarintTable(t *testing.T) {
	raw, err := os.ReadFile(kvDocPath)
	if err != nil {
		t.Fatal(err)
	}
	rows := uvarintRow.FindAllStringSubmatch(string(raw), -1)
	if len(rows) < 4 {
		t.Fatalf("%s: found %d uvarint example rows, want the table of §2", kvDocPath, len(rows))
	}
	for _, r := range rows {
		var v uint64
		fmt.Sscan(r[1], &v)
		want, err := hex.DecodeString(strings.ReplaceAll(r[2], " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.AppendUvarint(nil, v); !bytes.Equal(got, want) {
			t.Errorf("uvarint %d = % x, the document says % x", v, got, want)
		}
	}
	// A non-canonical length (a trailing zero group) is malformed.
	for _, b := range [][]byte{
		{Version, byte(OpGet), 0x81, 0x00, 'a'},
		{Version, byte(OpGet), 0x80, 0x00},
	} {
		if _, err := decodeCommand(b); !isMalformed(err) {
			t.Errorf("decode % x = %v, want ErrMalformed", b, err)
		}
	}
}

func isMalformed(err error) bool {
	var e interface{ AppCode() uint32 }
	return err != nil && errors.As(err, &e) && e.AppCode() == ErrMalformed.AppCode()
}
