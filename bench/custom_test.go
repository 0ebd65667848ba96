package bench

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestRunOpMeasuresAnySystem runs the load loop against a map: what the
// etcd comparison (tools/etcdbench) relies on. A read returns the last
// write of its key, and every error is counted under classify's name.
func TestRunOpMeasuresAnySystem(t *testing.T) {
	var mu sync.Mutex
	store := map[string]string{}
	errBusy := errors.New("busy")
	var calls int
	op := func(_ context.Context, _ int, read bool, key string, value []byte) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls%50 == 0 {
			return errBusy
		}
		if read {
			if _, ok := store[key]; !ok {
				return errors.New("read of a key never written: preload missing")
			}
			return nil
		}
		store[key] = string(value)
		return nil
	}
	classify := func(err error) string {
		if errors.Is(err, errBusy) {
			return "busy"
		}
		return "other"
	}
	res, err := RunOp(context.Background(), smallConfig(), "map", op, classify, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "map" || res.Reads == 0 || res.Writes == 0 {
		t.Fatalf("result %+v: want reads and writes named map", res)
	}
	if res.Errors == 0 || res.ErrorsByType["busy"] != res.Errors {
		t.Fatalf("errors %d by type %v: want all of them busy", res.Errors, res.ErrorsByType)
	}
	if _, err := RunOp(context.Background(), Config{}, "map", op, nil, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("zero config: %v, want ErrConfig", err)
	}
}
