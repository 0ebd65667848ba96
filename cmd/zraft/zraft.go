// Command zraft is the command-line client of a zraft cluster running the
// built-in key-value application.
//
//	zraft kv set KEY VALUE      prints OK
//	zraft kv get KEY            prints the value; exit 1 with "not found"
//	zraft kv del KEY            prints OK; exit 1 with "not found"
//	zraft kv cas KEY OLD NEW    prints OK; exit 1 with "mismatch"
//	zraft kv incr KEY [N]       prints the new value
//	zraft kv watch KEY          prints KEY=VALUE per change until interrupted
//	zraft status [--json]       members, roles, leader, term, sessions
//	zraft sessions [--json]     live sessions
//	zraft bench [flags]         load generator (see zraft bench --help)
//
// Client endpoints come from --endpoints or ZRAFT_ENDPOINTS (default: the
// `node --dev` cluster, 127.0.0.1:7101-7103); status and sessions use the
// members' HTTP endpoints from --http or ZRAFT_HTTP (default 127.0.0.1:7301-7303).
//
// TLS: --cacert (ZRAFT_CACERT) is the CA that signed the nodes'
// certificates; --cert and --key (ZRAFT_CERT, ZRAFT_KEY) are a client
// certificate for clusters with mutual TLS. Any of them turns TLS on for the
// client connection and the HTTP endpoints (https); without them everything
// is plaintext. The effective mode is printed on stderr. Like the other
// common flags they may come before the command:
//
//	zraft --cacert ca.pem --cert client.pem --key client-key.pem kv get k
//
// Exit codes: 0 success, 1 the operation failed (not found, mismatch,
// unreachable cluster, timeout: the message says which), 2 bad usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/zraft/zraft/internal/zraftcli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := zraftcli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
