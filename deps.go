//go:build tools

// Package zraft pins the modules the design names, so that `go mod tidy`
// keeps them while packages that import them are being written.
package zraft

import (
	_ "github.com/HdrHistogram/hdrhistogram-go"
	_ "github.com/anishathalye/porcupine"
	_ "github.com/asynkron/protoactor-go/actor"
	_ "github.com/go-zeromq/zmq4"
	_ "github.com/lni/dragonboat/v4"
	_ "github.com/lni/vfs"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/sony/gobreaker/v2"
	_ "go.uber.org/goleak"
)
