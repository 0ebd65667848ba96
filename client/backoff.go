package client

import (
	"fmt"
	"math"
	"time"
)

// backoff is an exponential backoff schedule with jitter. It is a value with
// no state: the caller keeps the attempt number, which keeps the schedule a
// pure function that a table test pins down.
type backoff struct {
	initial time.Duration
	max     time.Duration
	factor  float64
	jitter  float64 // fraction, e.g. 0.25 for ±25 %
}

func (b backoff) validate() error {
	switch {
	case b.initial <= 0:
		return fmt.Errorf("%w: backoff initial %v <= 0", ErrInvalidOption, b.initial)
	case b.max < b.initial:
		return fmt.Errorf("%w: backoff max %v < initial %v", ErrInvalidOption, b.max, b.initial)
	case !(b.factor >= 1) || math.IsInf(b.factor, 0):
		return fmt.Errorf("%w: backoff factor %v < 1", ErrInvalidOption, b.factor)
	case !(b.jitter >= 0 && b.jitter < 1):
		return fmt.Errorf("%w: backoff jitter %v not in [0, 1)", ErrInvalidOption, b.jitter)
	}
	return nil
}

// delay returns the wait before retry number n (counting from 0). r is a
// uniform random number in [0, 1) that picks the jitter; passing it in keeps
// delay deterministic under test.
func (b backoff) delay(n int, r float64) time.Duration {
	base := float64(b.max)
	if n < 0 {
		n = 0
	}
	// Past 64 doublings any sane configuration has hit the cap; stopping
	// there keeps the power from overflowing to +Inf.
	if n < 64 {
		base = math.Min(float64(b.initial)*math.Pow(b.factor, float64(n)), float64(b.max))
	}
	d := base * (1 + b.jitter*(2*r-1))
	if d > float64(b.max) {
		d = float64(b.max)
	}
	if d < 0 {
		d = 0
	}
	return time.Duration(d)
}
