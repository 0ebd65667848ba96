// Package transport moves byte frames between zraft nodes and clients over
// ZeroMQ's wire protocol (ZMTP 3.0, NULL mechanism, optionally inside TLS).
// It knows no message types: one frame in, one frame out.
//
// A node serves clients with a Router (a ZMTP ROUTER): Listen starts it,
// the node's gateway implements Handler to learn about connections and
// frames, and Router.Send answers a connection by its ConnID. A client
// reaches one node with Dial, which returns a Conn (a ZMTP DEALER with a
// random 16-byte routing identity). Both interoperate with libzmq 4.x
// DEALER and ROUTER sockets.
//
// # Why not zmq4's sockets
//
// zmq4 v0.17.0's Socket objects are unsafe on a network: a frame header
// announcing a huge length makes them allocate it and the process dies; the
// accept loop runs each handshake inline without a deadline, so one silent
// TCP connection blocks every new client; a peer declaring another peer's
// routing identity receives its replies; a ROUTER send holds one lock across
// the write to every connection, so one client that stops reading stalls
// all; a DEALER broadcasts to its endpoints, drops messages while
// disconnected and gives up reconnecting. This package uses only zmq4's
// connection layer, zmq4.Open, for the greeting and NULL handshake, and owns
// everything else:
//
//   - The handshake runs in the connection's own goroutine under
//     RouterConfig.HandshakeTimeout, with MaxHandshakes and MaxConns bounding
//     how many exist.
//   - zmq4 reads the handshake through a guard that parses ZMTP frame
//     headers in the bytes it passes and fails the connection before zmq4 has
//     seen the whole length of a frame over MaxFrameSize; only single command
//     frames are legal there. A panic inside zmq4.Open (its READY metadata
//     decoder indexes without bounds checks) is recovered as a failed
//     handshake.
//   - Routing uses ConnIDs the Router assigns; the identity a peer declares
//     is ignored.
//   - Each connection has a reader goroutine, a queue bounded in frames
//     and bytes that grows with use and shrinks back, and a writer goroutine
//     that runs only while frames are queued; read and write buffers come
//     from pools while bytes move, so an idle connection holds none. With
//     RouterConfig.Poller (off in DefaultRouterConfig, on in a node; Linux,
//     plain TCP) the reader goroutine too runs only while the connection
//     has bytes to read: an idle connection is parked in the Router's epoll
//     instance and costs no goroutine. Send never blocks and never holds a lock across a socket
//     write. A full queue closes that connection only.
//   - A Conn is one connection to one endpoint. When it dies, Send and Recv
//     say so with an error; reconnecting is the caller's policy.
//
// # The data path is ours
//
// After the handshake, frames are read and written by this package, not by
// zmq4.Conn.RecvMsg/SendMsg: RecvMsg answers PING by writing to the socket
// from the reader goroutine (racing the writer's buffer), allocates a
// message per frame set, and SendMsg writes header and body as separate
// syscalls. ZMTP 3 NULL framing is a flags byte, a 1- or 8-byte length and
// the body, so the data path is short: the reader checks every length
// against MaxFrameSize before allocating, answers PING with PONG through the
// writer, closes on ERROR, ignores other commands and never passes a command
// to the Handler; the writer encodes frames into a bufio.Writer and flushes
// only when its queue is empty, so under load many frames share a syscall.
//
// # Multi-part messages
//
// zraft speaks single-frame messages. A multi-part message is read to its
// end without allocating its bodies (each part still within MaxFrameSize),
// discarded and counted (RouterStats.MultipartDropped, ConnStats), and the
// connection is kept. This also means libzmq REQ sockets, which prepend an
// empty delimiter frame, are not supported clients; use DEALER.
//
// # Security
//
// Without TLS everything, including any session secret the protocol above
// carries, travels in clear. Set RouterConfig.TLS and DialConfig.TLS to wrap
// connections in crypto/tls before the ZMTP handshake; set
// tls.Config.ClientAuth on the server to require client certificates.
// libzmq has no TLS, so TLS clients must use this package.
//
// See docs/transport.md for the limits, the goroutines and their owners.
package transport
