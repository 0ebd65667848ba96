package kv_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/kv"
)

// Dial connects to a cluster running the kv application; the typed calls
// encode, decode and map errors.
func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := kv.Dial(ctx, []string{"127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	rev, err := c.Set(ctx, "greeting", []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	got, err := c.Get(ctx, "greeting")
	switch {
	case errors.Is(err, kv.ErrNotFound):
		fmt.Println("deleted meanwhile")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("%s (set at revision %d, last changed at %d)\n", got.Value, rev, got.Revision)
	}
	if _, err := c.CompareAndSet(ctx, "greeting", []byte("hi"), []byte("hey")); errors.Is(err, kv.ErrMismatch) {
		fmt.Println("someone else changed it")
	} else if errors.Is(err, client.ErrOutcomeUnknown) {
		fmt.Println("may or may not have run; read to find out")
	}
}

// Watch delivers the current value, then every change in order, until its
// context ends.
func ExampleClient_Watch() {
	var c *kv.Client // from kv.Dial
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := c.Watch(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	for ev := range w.Events() {
		if ev.Deleted {
			fmt.Printf("%s deleted at %d\n", ev.Key, ev.Revision)
			continue
		}
		fmt.Printf("%s=%s at %d\n", ev.Key, ev.Value, ev.Revision)
	}
	if err := w.Err(); !errors.Is(err, context.DeadlineExceeded) {
		log.Print("watch ended: ", err)
	}
}
