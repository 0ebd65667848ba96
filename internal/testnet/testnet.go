// Package testnet has network helpers shared by tests.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// given holds every port this process was handed, so that two calls never
// hand out the same port: a port is free when chosen, but the caller binds
// it later, and another call in between must not choose it again.
var given struct {
	sync.Mutex
	ports map[int]bool
}

// take reserves ports for this process; it reports false, taking none,
// when one was handed out before.
func take(ports ...int) bool {
	given.Lock()
	defer given.Unlock()
	if given.ports == nil {
		given.ports = make(map[int]bool)
	}
	for _, p := range ports {
		if given.ports[p] {
			return false
		}
	}
	for _, p := range ports {
		given.ports[p] = true
	}
	return true
}

// ConsecutivePorts finds n consecutive ports on 127.0.0.1, below the
// ephemeral range and never handed out before in this process, that were
// free a moment ago and returns the first; it fails the test after 100 tries.
// Another process may take one before the caller binds it, so callers that
// can retry on a taken port should.
func ConsecutivePorts(t testing.TB, n int) int {
	t.Helper()
	for try := 0; try < 100; try++ {
		// Below the kernel's ephemeral range (32768 and up by default), so
		// that no outgoing connection of a concurrent test takes one of
		// these ports between this check and the caller's bind.
		base := 10000 + rand.IntN(22000-n)
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
			ports := make([]int, n)
			for i := range ports {
				ports[i] = base + i
			}
			if take(ports...) {
				return base
			}
		}
	}
	t.Fatal("no consecutive free ports")
	return 0
}

// FreePorts returns n distinct ports on 127.0.0.1, below the ephemeral
// range (see ConsecutivePorts), never handed out before in this process,
// that were free a moment ago (all held open
// together while chosen, so none repeats). Another process may still take
// one before the caller binds it.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for try := 0; len(ports) < n; try++ {
		if try >= 100*n {
			return nil, fmt.Errorf("testnet: no %d free ports below the ephemeral range", n)
		}
		p := 10000 + rand.IntN(22000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		if !take(p) {
			_ = l.Close()
			continue
		}
		ls = append(ls, l)
		ports = append(ports, p)
	}
	return ports, nil
}
