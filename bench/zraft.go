package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

// dialTimeout bounds opening one session (the client follows leader hints
// and backs off under the server's session-creation rate limit meanwhile).
const dialTimeout = 30 * time.Second

// dialParallel bounds how many sessions are being opened at once.
const dialParallel = 64

// RunZraft measures a zraft cluster running the kv application at
// cfg.Endpoints: it opens cfg.Sessions sessions (one client.Conn each), runs
// cfg.InFlight workers per session issuing kv set commands (kv.Client.Set)
// and, for the cfg.ReadRatio share, linearizable kv gets (kv.Client.Get), back to
// back, through cfg.Warmup and cfg.Duration, then closes every session.
//
// progress, when not nil, is called about once per second from a goroutine
// of the run (never concurrently with itself); it should return quickly.
// On error the returned Result holds what was measured, if anything.
func RunZraft(ctx context.Context, cfg Config, progress func(Progress)) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if len(cfg.Endpoints) == 0 {
		return Result{}, configErr("endpoints must name at least one member's client address")
	}
	conns, err := dialAll(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	kvs := make([]*kv.Client, len(conns))
	for i, c := range conns {
		kvs[i] = kv.NewClient(c)
	}
	res, err := newRunner(cfg, NameZraft, zraftDo(cfg.InFlight, kvs), zraftErrorType, progress).run(ctx)
	return res, errors.Join(err, closeAll(conns))
}

// zraftDo is the operation of worker w: a kv get or set through the
// session of its group of inFlight workers.
func zraftDo(inFlight int, kvs []*kv.Client) doFunc {
	return func(ctx context.Context, w int, read bool, key string, value []byte) error {
		c := kvs[w/inFlight]
		if read {
			_, err := c.Get(ctx, key)
			return err
		}
		_, err := c.Set(ctx, key, value)
		return err
	}
}

// dialAll opens one session per cfg.Sessions, at most dialParallel at a
// time. On failure it closes those it opened.
func dialAll(ctx context.Context, cfg Config) ([]*client.Conn, error) {
	conns := make([]*client.Conn, cfg.Sessions)
	errs := make([]error, cfg.Sessions)
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			var opts []client.Option
			if cfg.TLS != nil {
				opts = append(opts, client.WithTLS(cfg.TLS))
			}
			conns[i], errs[i] = client.Dial(dctx, cfg.Endpoints, opts...)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		var opened []*client.Conn
		for _, c := range conns {
			if c != nil {
				opened = append(opened, c)
			}
		}
		return nil, errors.Join(fmt.Errorf("%w: %w", ErrDial, err), closeAll(opened))
	}
	return conns, nil
}

// closeAll closes conns in parallel: each Close may linger up to a second
// to flush its goodbye.
func closeAll(conns []*client.Conn) error {
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Close(); err != nil {
				errs[i] = fmt.Errorf("%w: session %d: %w", ErrClose, i, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// clientErrors names the client library's sentinels for
// Result.ErrorsByType, most specific first: ErrOutcomeUnknown may wrap
// ErrTimeout, and ErrSessionExpired may wrap other causes.
var clientErrors = []struct {
	err  error
	name string
}{
	{client.ErrSessionExpired, "session_expired"},
	{client.ErrOutcomeUnknown, "outcome_unknown"},
	{client.ErrTimeout, "timeout"},
	{client.ErrOverloaded, "overloaded"},
	{client.ErrClusterUnavailable, "cluster_unavailable"},
	{client.ErrResponseEvicted, "response_evicted"},
	{client.ErrTooLarge, "too_large"},
	{client.ErrNotLeader, "not_leader"},
	{client.ErrUnsupported, "unsupported"},
	{client.ErrRejected, "rejected"},
	{client.ErrRateLimited, "rate_limited"},
	{client.ErrTooManySessions, "too_many_sessions"},
	{client.ErrTooManyInFlight, "too_many_in_flight"},
	{client.ErrShuttingDown, "shutting_down"},
	{client.ErrSessionMoved, "session_moved"},
	{client.ErrMalformed, "malformed"},
	{client.ErrInternal, "internal"},
	{client.ErrProtocol, "protocol"},
	{client.ErrClosed, "closed"},
}

// zraftErrorType names the kind of a RunZraft operation's error.
// Application errors are named by their kv error ("app:key not found").
func zraftErrorType(err error) string {
	var app *client.AppError
	if errors.As(err, &app) {
		text := kv.ErrorFromCode(app.Code, "").Error()
		return "app:" + strings.TrimSuffix(strings.TrimPrefix(text, "kv: "), ": ")
	}
	for _, e := range clientErrors {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, kv.ErrMalformed):
		// A result that did not decode.
		return "bad_result"
	}
	return "other"
}
