package client

import "github.com/zraft/zraft/codec"

// Notification is a leader-only notification the replicated application
// sent to this session (fsm Context.Notify; kv watches). Unlike a
// ServerRequest it is not replicated and not acknowledged (the Conn sends
// nothing back): it arrives at most once and may be lost.
//
// Lost reports that notifications may have been lost before this one: the
// node dropped some (its relay was full), the session moved to another
// connection or member (every continuation of the session counts, since
// notifications sent meanwhile went nowhere), or the Conn's notification
// buffer was full (see WithNotificationBuffer). A Notification with Lost
// set may have an empty Payload: it is then only that marker. An
// application that receives Lost re-reads whatever state the notifications
// describe (kv.Watcher does that for its watches).
type Notification struct {
	Payload []byte // owned by the receiver
	Lost    bool
}

// defaultNoteBuffer is WithNotificationBuffer's default.
const defaultNoteBuffer = 1024

// WithNotificationHandler sets a function called with each Notification,
// one at a time, in the order they arrived, on a goroutine the Conn owns.
// Close waits for h to return (unless Close is called from h). Default:
// none (notifications are dropped).
func WithNotificationHandler(h func(Notification)) Option {
	return func(o *options) { o.noteHandler = h }
}

// WithNotificationBuffer bounds the notifications waiting for the handler
// (see WithNotificationHandler). When it is full a notification is
// dropped, and the next one handed to the handler has Lost set (or, when
// none arrives, a marker with an empty payload, handed over at the Conn's
// next event once there is room: at the latest by its next keep-alive). Default: 1024.
// Must be at least 1.
func WithNotificationBuffer(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.invalid("notification buffer %d < 1", n)
			return
		}
		o.noteBuffer = n
	}
}

// onNotification hands a Notification to the delivery goroutine, or drops
// it (and marks the next one Lost) when the buffer is full.
func (c *Conn) onNotification(m *codec.Notification) {
	if c.noteCh == nil {
		return
	}
	n := Notification{Payload: m.Payload, Lost: c.noteLost || m.Flags&codec.NotificationLost != 0}
	select {
	case c.noteCh <- n:
		c.noteLost = false
	default:
		c.noteLost = true
	}
}

// flushNoteLost sends the Lost marker owed to the handler, if any and if
// there is room; the loop calls it after every event.
func (c *Conn) flushNoteLost() {
	if !c.noteLost || c.noteCh == nil {
		return
	}
	select {
	case c.noteCh <- Notification{Lost: true}:
		c.noteLost = false
	default:
	}
}

// deliverNotifications is the goroutine that calls the notification
// handler.
func (c *Conn) deliverNotifications() {
	defer c.noteWG.Done()
	c.noteGoroutine.Store(goid())
	for n := range c.noteCh {
		select {
		case <-c.closing:
			return
		default:
		}
		c.opts.noteHandler(n)
	}
}
