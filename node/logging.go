package node

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"sync/atomic"

	dblogger "github.com/lni/dragonboat/v4/logger"
)

// Dependencies log through the node's slog logger, quiet by default:
// dragonboat at its ERROR level (as slog warnings for its transport, whose
// errors are routine while a peer restarts, and slog errors otherwise);
// pebble's standard-log output at debug; protoactor at warnings and above.
// dragonboat's loggers are process-wide, so they follow the logger of the
// most recently started node.

var depLog atomic.Pointer[slog.Logger]

func installDependencyLogging(l *slog.Logger) {
	depLog.Store(l)
	quietOnce.Do(func() {
		dblogger.SetLoggerFactory(func(pkg string) dblogger.ILogger {
			return &dbLogger{pkg: pkg, level: int32(dblogger.ERROR)}
		})
		for _, name := range []string{"config", "dragonboat", "gossip", "grpc", "logdb", "pebblekv", "raft",
			"raftpb", "registry", "rsm", "server", "settings", "tan", "tools", "transport"} {
			dblogger.GetLogger(name).SetLevel(dblogger.ERROR)
		}
		log.SetFlags(0)
		log.SetOutput(stdLogWriter{})
	})
}

func dependencyLogger() *slog.Logger {
	if l := depLog.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// dbLogger adapts one dragonboat package logger to slog.
type dbLogger struct {
	pkg   string
	level int32
}

func (d *dbLogger) SetLevel(l dblogger.LogLevel) { atomic.StoreInt32(&d.level, int32(l)) }

func (d *dbLogger) log(l dblogger.LogLevel, s slog.Level, format string, args []any) {
	if int32(l) > atomic.LoadInt32(&d.level) {
		return
	}
	dependencyLogger().Log(context.Background(), s, fmt.Sprintf(format, args...), "component", "dragonboat/"+d.pkg)
}

func (d *dbLogger) Debugf(f string, a ...any) { d.log(dblogger.DEBUG, slog.LevelDebug, f, a) }
func (d *dbLogger) Infof(f string, a ...any)  { d.log(dblogger.INFO, slog.LevelDebug, f, a) }
func (d *dbLogger) Warningf(f string, a ...any) {
	d.log(dblogger.WARNING, slog.LevelWarn, f, a)
}
func (d *dbLogger) Errorf(f string, a ...any) {
	level := slog.LevelError
	if d.pkg == "transport" {
		level = slog.LevelWarn
	}
	d.log(dblogger.ERROR, level, f, a)
}

// Panicf logs and panics, as dragonboat requires: its callers go on
// assuming Panicf did not return (a broken invariant), so returning would
// run Raft on corrupt state. Peer input no longer reaches the Panicf calls
// it used to (inconsistent registry target, a message without a recipient,
// an applied entry without a key or with a bad encoding header): node/raftnet
// drops such input first.
func (d *dbLogger) Panicf(f string, a ...any) {
	msg := fmt.Sprintf(f, a...)
	dependencyLogger().Error(msg, "component", "dragonboat/"+d.pkg)
	panic(msg)
}

// stdLogWriter sends the standard log package's output (pebble's) to slog.
type stdLogWriter struct{}

func (stdLogWriter) Write(p []byte) (int, error) {
	dependencyLogger().Debug(strings.TrimRight(string(p), "\n"), "component", "pebble")
	return len(p), nil
}

// minLevel drops records below a level (protoactor logs its lifecycle at
// info, which is not an operator's concern).
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(g string) slog.Handler { return minLevel{h.Handler.WithGroup(g), h.min} }
