package bench

import "context"

// Op performs one operation of a load run for worker w (0 ≤ w <
// Sessions × InFlight): a linearizable read of key when read is true,
// otherwise a write of value to key. It must not keep value after it
// returns. ctx carries the operation's deadline (Config.Timeout).
type Op func(ctx context.Context, w int, read bool, key string, value []byte) error

// RunOp runs the same load loop as RunZraft and RunBaseline (preload,
// warm-up, measurement, histogram) against any system: op does one
// operation and classify names an error's kind for Result.ErrorsByType
// (nil: "error"). The result is named name. It is how tools outside this
// module (tools/etcdbench) measure another system with exactly our loop.
func RunOp(ctx context.Context, cfg Config, name string, op Op, classify func(error) string, progress func(Progress)) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if classify == nil {
		classify = func(error) string { return "error" }
	}
	return newRunner(cfg, name, doFunc(op), classify, progress).run(ctx)
}
