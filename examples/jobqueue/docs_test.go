package jobqueue_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestExtendingDocQuotesThisCode keeps docs/extending.md's job-queue example
// the real thing: every Go block there marked as quoted from a file of this
// package must appear in that file verbatim.
func TestExtendingDocQuotesThisCode(t *testing.T) {
	doc, err := os.ReadFile("../../docs/extending.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- quoted from examples/jobqueue/([a-z_]+\\.go);[^>]*-->\n```go\n(.*?)```\n")
	quotes := re.FindAllSubmatch(doc, -1)
	if len(quotes) < 5 {
		t.Fatalf("found %d quoted blocks in docs/extending.md, want the example's", len(quotes))
	}
	for _, q := range quotes {
		file, code := string(q[1]), string(q[2])
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(src), code) {
			first, _, _ := strings.Cut(code, "\n")
			t.Errorf("docs/extending.md quotes %s, but the file no longer contains the block starting %q", file, first)
		}
	}
}
