package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/zraft/zraft/codec"
)

var (
	codeUse = regexp.MustCompile(`codec\.Code([A-Z][A-Za-z]*)\b`)
	codeRow = regexp.MustCompile("(?m)^\\| `([A-Za-z]+)` \\| ([^|]*) \\| ([^|]*) \\|$")
)

// TestProtocolDocListsEveryCodeTheServerSends keeps docs/protocol.md §6.1
// and the node in step: every code the node's packages name (they are the
// codes it can send) has a row saying in which messages and when; every
// code of §6 has a row; a row that says a code is never sent is true.
func TestProtocolDocListsEveryCodeTheServerSends(t *testing.T) {
	raw, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	start, end := strings.Index(doc, "<!-- codes-sent -->"), strings.Index(doc, "<!-- /codes-sent -->")
	if start < 0 || end < start {
		t.Fatal("docs/protocol.md has no <!-- codes-sent --> table")
	}
	rows := map[string][2]string{}
	for _, m := range codeRow.FindAllStringSubmatch(doc[start:end], -1) {
		rows[m[1]] = [2]string{strings.TrimSpace(m[2]), strings.TrimSpace(m[3])}
	}
	for c := 0; c < 256; c++ {
		name := codec.Code(c).String()
		if strings.HasPrefix(name, "Code(") {
			continue
		}
		r, ok := rows[name]
		if !ok {
			t.Errorf("§6.1 has no row for code %d %s", c, name)
			continue
		}
		if r[0] == "" || r[1] == "" {
			t.Errorf("§6.1 row %s does not say in which messages and when", name)
		}
	}
	used := map[string][]string{}
	for _, dir := range []string{"../actors", "../node", "../transport"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range codeUse.FindAllStringSubmatch(string(src), -1) {
				used[m[1]] = append(used[m[1]], f)
			}
		}
	}
	if len(used) < 10 {
		t.Fatalf("found only %d codes in the node's sources; the scan is broken", len(used))
	}
	for name, files := range used {
		r, ok := rows[name]
		switch {
		case !ok:
			t.Errorf("the node names code %s (%s) but §6.1 does not list it", name, files[0])
		case strings.HasPrefix(r[1], "Never sent"):
			t.Errorf("§6.1 says %s is never sent, but %s names it", name, files[0])
		}
	}
}
