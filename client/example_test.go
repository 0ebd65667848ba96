package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/zraft/zraft/client"
)

// Dial creates a session with the cluster; any member's client address
// will do, the client follows the leader from there.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"},
		client.WithCapabilities(map[string]string{"watch": "v1"}),
		client.WithEventHandler(func(ev client.Event) { log.Printf("zraft: %v", ev) }),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Printf("session %x with %d members\n", conn.SessionID(), len(conn.Members()))
}

// Submit runs a command exactly once; the error tells whether it may have
// run.
func ExampleConn_Submit() {
	var conn *client.Conn // from client.Dial
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	result, err := conn.Submit(ctx, []byte("set color blue"))
	var appErr *client.AppError
	switch {
	case err == nil:
		fmt.Printf("result: %s\n", result)
	case errors.As(err, &appErr):
		// The command ran; the application refused it.
		fmt.Printf("application error %d: %s\n", appErr.Code, appErr.Message)
	case errors.Is(err, client.ErrOutcomeUnknown):
		// It may or may not have run (at most once): read the state to
		// find out before deciding what to do.
		fmt.Println("outcome unknown:", err)
	default:
		// It did not run (for example ErrOverloaded, ErrClosed before
		// sending, or a context that ended before sending).
		fmt.Println("failed:", err)
	}
}

// Go starts commands without waiting, in the manner of net/rpc.
func ExampleConn_Go() {
	var conn *client.Conn // from client.Dial
	calls := make([]*client.Call, 0, 3)
	for _, cmd := range []string{"incr a", "incr b", "incr c"} {
		calls = append(calls, conn.Go([]byte(cmd)))
	}
	for _, call := range calls {
		<-call.Done
		fmt.Printf("%s -> %s, %v\n", call.Payload, call.Result, call.Error)
	}
}

// Queries are linearizable by default; AllowStale trades freshness for
// speed.
func ExampleConn_Query() {
	var conn *client.Conn // from client.Dial
	ctx := context.Background()
	fresh, err := conn.Query(ctx, []byte("get color"))
	if err != nil {
		log.Fatal(err)
	}
	maybeStale, err := conn.Query(ctx, []byte("get color"), client.AllowStale())
	if errors.Is(err, client.ErrUnsupported) {
		maybeStale = fresh // this cluster serves linearizable reads only
	} else if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s\n", fresh, maybeStale)
}

// Server-initiated requests arrive in id order, each once; the client has
// acknowledged them before the handler runs.
func ExampleWithServerRequestHandler() {
	ctx := context.Background()
	conn, err := client.Dial(ctx, []string{"127.0.0.1:7000"},
		client.WithCapabilities(map[string]string{"watch": "v1"}),
		client.WithServerRequestHandler(func(r client.ServerRequest) {
			fmt.Printf("server request %d created at %v: %s\n", r.ID, r.CreatedAt, r.Payload)
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Submit(ctx, []byte("watch color")); err != nil {
		log.Fatal(err)
	}
}
