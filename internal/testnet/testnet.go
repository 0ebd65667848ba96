// Package testnet has network helpers shared by tests.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// ConsecutivePorts finds n consecutive ports on 127.0.0.1 that were free a
// moment ago and returns the first; it fails the test after 100 tries.
// Another process may take one before the caller binds it, so callers that
// can retry on a taken port should.
func ConsecutivePorts(t testing.TB, n int) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		base := 20000 + rand.IntN(30000)
		var ls []net.Listener
		for i := 0; i < n; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			_ = l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatal("no consecutive free ports")
	return 0
}

// FreePorts returns n distinct ports on 127.0.0.1 that were free a moment
// ago (all held open together while chosen, so none repeats). Another
// process may take one before the caller binds it.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}
