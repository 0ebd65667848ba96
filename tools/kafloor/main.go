// Command kafloor measures the CPU a Go server spends on N connections that each send one
// small message per second and get one small answer (one read and one
// write syscall per message, a goroutine per connection), on loopback.
// The lower bound under zraft's keep-alive figures.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	n := flag.Int("n", 10000, "connections")
	dur := flag.Duration("d", 20*time.Second, "measured time")
	client := flag.String("client", "", "internal: run the client against this address")
	flag.Parse()
	if *client != "" {
		runClient(*client, *n, *dur+5*time.Second)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				b := make([]byte, 32)
				for {
					if _, err := io.ReadFull(c, b[:24]); err != nil {
						return
					}
					if _, err := c.Write(b[:24]); err != nil {
						return
					}
				}
			}()
		}
	}()
	cmd := exec.Command(os.Args[0], "-client", ln.Addr().String(), "-n", strconv.Itoa(*n), "-d", dur.String())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	time.Sleep(time.Duration(*n/2000+3) * time.Second) // connections open
	c0, t0 := cpu(), time.Now()
	time.Sleep(*dur)
	used, el := cpu()-c0, time.Since(t0)
	fmt.Printf("%d connections, 1 msg/s each: server CPU %.1f%% of a core (%.1f µs per message)\n",
		*n, 100*used.Seconds()/el.Seconds(), used.Seconds()*1e6/(float64(*n)*el.Seconds()))
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

func runClient(addr string, n int, d time.Duration) {
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			panic(err)
		}
		go func(i int) {
			time.Sleep(time.Duration(i) * time.Second / time.Duration(n))
			b := make([]byte, 24)
			t := time.NewTicker(time.Second)
			for range t.C {
				if _, err := c.Write(b); err != nil {
					return
				}
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
			}
		}(i)
	}
	time.Sleep(d)
}
