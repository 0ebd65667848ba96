// Command etcdbench runs zraft's benchmark load loop (bench.RunOp: the same
// preload, warm-up, measurement and histograms as `zraft bench`) against an
// etcd cluster, so the two systems are compared with one loop on one
// machine. Writes are etcd Puts, reads are linearizable Gets (etcd's
// default, a ReadIndex round like zraft's reads). One etcd client (one
// gRPC connection) per session, as `zraft bench` opens one zraft session
// per session.
//
// It lives in its own module so that etcd's client and gRPC stay out of
// zraft's go.mod. Usage (compare.sh starts both clusters and runs both):
//
//	go run . --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 \
//	    --sessions 64 --inflight 8 --duration 10s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/zraft/zraft/bench"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcdbench:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg := bench.DefaultConfig()
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "etcd client addresses, comma separated")
	flag.IntVar(&cfg.Sessions, "sessions", cfg.Sessions, "clients (one gRPC connection each)")
	flag.IntVar(&cfg.InFlight, "inflight", cfg.InFlight, "operations in flight per client")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "measured time")
	flag.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "warm-up time")
	flag.IntVar(&cfg.PayloadSize, "payload", cfg.PayloadSize, "value size in bytes")
	flag.Float64Var(&cfg.ReadRatio, "read-ratio", cfg.ReadRatio, "share of linearizable reads (0..1)")
	flag.IntVar(&cfg.Keys, "keys", cfg.Keys, "key space")
	jsonOut := flag.Bool("json", false, "print JSON instead of a table")
	flag.Parse()
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Endpoints = strings.Split(*endpoints, ",")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	clients := make([]*clientv3.Client, cfg.Sessions)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   cfg.Endpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			return fmt.Errorf("dial etcd: %w", err)
		}
		clients[i] = c
	}
	op := func(ctx context.Context, w int, read bool, key string, value []byte) error {
		c := clients[w/cfg.InFlight]
		if read {
			_, err := c.Get(ctx, key)
			return err
		}
		_, err := c.Put(ctx, key, string(value))
		return err
	}
	classify := func(err error) string {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return "timeout"
		default:
			return "error"
		}
	}
	progress := func(p bench.Progress) { fmt.Fprintln(os.Stderr, p.ProgressLine()) }
	res, err := bench.RunOp(ctx, cfg, "etcd", op, classify, progress)
	if *jsonOut {
		if jerr := bench.WriteJSON(os.Stdout, res); jerr != nil {
			return errors.Join(err, jerr)
		}
	} else if terr := bench.WriteTable(os.Stdout, res); terr != nil {
		return errors.Join(err, terr)
	}
	return err
}
