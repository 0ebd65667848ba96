package zraftcli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

func kvCommand(ctx context.Context, args []string, e env) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: kv needs a subcommand: set, get, del, cas, incr or watch", errUsage)
	}
	sub, args := args[0], args[1:]
	want := map[string][]string{
		"set":   {"KEY", "VALUE"},
		"get":   {"KEY"},
		"del":   {"KEY"},
		"cas":   {"KEY", "OLD", "NEW"},
		"incr":  {"KEY", "[N]"},
		"watch": {"KEY"},
	}
	names, ok := want[sub]
	if !ok {
		return fmt.Errorf("%w: unknown kv subcommand %q (set, get, del, cas, incr, watch)", errUsage, sub)
	}
	synopsis := fmt.Sprintf("zraft kv %s %s [flags]", sub, joinNames(names))
	fs := newFlags("kv "+sub, synopsis, e)
	var c common
	c.register(fs, e)
	if err := parse(fs, args); err != nil {
		return err
	}
	pos := fs.Args()
	min, max := len(names), len(names)
	if sub == "incr" {
		min = 1
	}
	if len(pos) < min || len(pos) > max {
		fs.Usage()
		return fmt.Errorf("%w: kv %s takes %s", errUsage, sub, joinNames(names))
	}
	if err := c.prepare(e); err != nil {
		return err
	}
	defer c.release()
	if sub == "watch" {
		return watch(ctx, c, pos[0], e)
	}
	// Arguments are checked before anything is sent.
	n := int64(1)
	if sub == "incr" && len(pos) == 2 {
		var err error
		if n, err = strconv.ParseInt(pos[1], 10, 64); err != nil {
			return fmt.Errorf("%w: N must be an integer: %v", errUsage, err)
		}
	}

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	conn, err := dial(ctx, c)
	if err != nil {
		return err
	}
	defer conn.Close()

	k := kv.NewClient(conn)
	switch sub {
	case "set":
		_, err = k.Set(ctx, pos[0], []byte(pos[1]))
		return okOr(e, err)
	case "del":
		_, err = k.Delete(ctx, pos[0])
		return okOr(e, err)
	case "cas":
		_, err = k.CompareAndSet(ctx, pos[0], []byte(pos[1]), []byte(pos[2]))
		return okOr(e, err)
	case "incr":
		v, err := k.Incr(ctx, pos[0], n)
		if err != nil {
			return explain(err)
		}
		fmt.Fprintln(e.stdout, v)
		return nil
	default: // get
		kv, err := k.Get(ctx, pos[0])
		if err != nil {
			return explain(err)
		}
		fmt.Fprintln(e.stdout, string(kv.Value))
		return nil
	}
}

func joinNames(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += " "
		}
		s += n
	}
	return s
}

func dial(ctx context.Context, c common, opts ...client.Option) (*client.Conn, error) {
	eps := c.endpointList()
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: no endpoints", errUsage)
	}
	if c.tls != nil {
		opts = append(opts, client.WithTLS(c.tls))
	}
	conn, err := client.Dial(ctx, eps, opts...)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the cluster at %s: %w%s", c.endpoints, err, dialHint(c, err))
	}
	return conn, nil
}

// dialHint is what to check when the cluster cannot be reached. A TLS
// handshake that failed for good (client.ErrTLS, returned at once) is a
// certificate problem; without TLS, a TLS cluster closes the connection
// before the greeting, which looks like any unreachable node.
func dialHint(c common, err error) string {
	switch {
	case c.tls == nil:
		return " (if the cluster uses TLS, give --cacert, and --cert/--key for mutual TLS; env ZRAFT_CACERT, ZRAFT_CERT, ZRAFT_KEY)"
	case !errors.Is(err, client.ErrTLS):
		return ""
	case c.cert == "":
		return " (if the cluster uses mutual TLS, give a client certificate with --cert and --key; " +
			"--cacert must be the CA that signed the nodes' certificates)"
	default:
		return " (check that --cacert is the CA that signed the nodes' certificates and that --cert is signed by the CA the nodes trust for clients)"
	}
}

func okOr(e env, err error) error {
	if err != nil {
		return explain(err)
	}
	fmt.Fprintln(e.stdout, "OK")
	return nil
}

// explain turns an error into the message a user acts on: kv's own errors
// by name ("not found", "mismatch"), the client's by what happened.
func explain(err error) error {
	var app *client.AppError
	if errors.As(err, &app) {
		kerr := kv.ErrorFromCode(app.Code, app.Message)
		switch {
		case errors.Is(kerr, kv.ErrNotFound):
			return errors.New("not found")
		case errors.Is(kerr, kv.ErrMismatch):
			return errors.New("mismatch")
		}
		return kerr
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, client.ErrTimeout):
		return fmt.Errorf("timed out (the outcome of a write may be unknown): %w", err)
	case errors.Is(err, client.ErrClusterUnavailable):
		return fmt.Errorf("the cluster has no leader: %w", err)
	}
	return err
}

func watch(ctx context.Context, c common, key string, e env) error {
	out := bufio.NewWriter(e.stdout)
	// The watcher ends the watch with an error when the session ends
	// (expiry after a long partition) instead of leaving it silently deaf.
	w := kv.NewWatcher()
	dctx, cancel := context.WithTimeout(ctx, c.timeout)
	conn, err := dial(dctx, c, w.ConnOptions()...)
	cancel()
	if err != nil {
		return err
	}
	k := kv.NewClient(conn, kv.WithWatcher(w))
	defer k.Close()
	// Closing the Conn first ends the session and its watch on the
	// cluster, so k.Close has nothing to unwatch.
	defer conn.Close()
	wt, err := k.Watch(ctx, key)
	if err != nil {
		return explain(err)
	}
	for ev := range wt.Events() {
		line := ev.Key + "=" + string(ev.Value)
		if ev.Deleted {
			line = ev.Key + " deleted"
		}
		fmt.Fprintln(out, line)
		if err := out.Flush(); err != nil {
			return err
		}
	}
	if err := wt.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("watch ended: %w", err)
	}
	return nil
}
