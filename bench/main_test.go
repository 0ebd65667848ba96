package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// The runs start workers, a progress reporter, client sessions and whole
// clusters; every one of their goroutines must be gone when a test ends.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
