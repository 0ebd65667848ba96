// Package admin is the Go API for operating a zraft cluster: member list,
// add and remove, leadership transfer, backups (snapshot save) and status,
// through the members' HTTP endpoints (node.Config.HTTPAddr). The zraft
// command line is built on it, so the two cannot drift.
//
//	a, err := admin.New([]string{"10.0.0.1:7301", "10.0.0.2:7301", "10.0.0.3:7301"},
//		admin.WithToken(token), admin.WithTLS(tlsConfig))
//	defer a.Close()
//	err = a.MemberAdd(ctx, admin.Member{ID: 4, RaftAddr: "10.0.0.4:7201", ClientAddr: "10.0.0.4:7101"})
//
// Changes need the cluster's admin credential (WithToken; docs/operations.md,
// Admin access). Errors match this package's sentinels with errors.Is
// (ErrUnauthorized, ErrRefused, ...) and are an *Error, which carries the
// member's own reason (errors.As).
//
// The package imports only the standard library and node/httpapi: a tool
// that links it does not link the node (dragonboat, protoactor).
package admin

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/zraft/zraft/node/httpapi"
)

// Errors. Every error a Client returns matches one of them.
var (
	// ErrUnauthorized: the member wants the admin credential (HTTP 401):
	// none was sent (WithToken) or it is not the member's admin_token.
	ErrUnauthorized = errors.New("admin: unauthorized")
	// ErrForbidden: the member serves no one this request (HTTP 403): its
	// admin endpoints are disabled (no admin_token), or under mutual TLS
	// no client certificate was presented (WithTLS).
	ErrForbidden = errors.New("admin: forbidden")
	// ErrRefused: the member understood the request and refused it as
	// unsafe or invalid (HTTP 400 or 409): removing the last member, an id
	// already in use or once removed, a change while another is in flight,
	// a transfer target that is not a voting member, a snapshot while
	// another is being taken. Error.Message is the member's reason;
	// nothing changed.
	ErrRefused = errors.New("admin: refused")
	// ErrUnavailable: no member answered, none leads, or the member could
	// not do it now (HTTP 503: no quorum, a timeout). Retrying later may
	// succeed; a membership change that failed this way may or may not
	// have happened (MemberList says).
	ErrUnavailable = errors.New("admin: unavailable")
	// ErrNotLeader: a membership change reached a member that does not
	// lead (421), typically because leadership moved after the client
	// found the leader. MemberAdd and MemberRemove find the leader again
	// and retry until their deadline; the error is returned only then.
	ErrNotLeader = errors.New("admin: not the leader")
	// ErrNotMoved: leadership did not reach the target before the wait
	// ended (dragonboat's transfer is best effort); the TransferResult
	// says who leads.
	ErrNotMoved = errors.New("admin: leadership did not move")
	// ErrInvalid: a bad argument, refused before anything was sent.
	ErrInvalid = errors.New("admin: invalid argument")
	// ErrWrite: writing the backup locally failed (SnapshotSave's writer,
	// SnapshotSaveFile's file).
	ErrWrite = errors.New("admin: write backup")
	// ErrBadAnswer: the member's answer could not be read (not JSON of
	// the expected shape, a truncated backup, another status code).
	ErrBadAnswer = errors.New("admin: bad answer")
)

// Error is a failed call: which operation, which member, the HTTP status
// and the member's reason. It matches its sentinel (Err) with errors.Is.
type Error struct {
	Op       string // "member add", "leader transfer", ...
	Endpoint string // the member's HTTP endpoint; "" when no member was asked
	Status   int    // HTTP status code; 0 when there was no answer
	Message  string // the member's reason, or what went wrong
	Err      error  // one of the sentinels above
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s", e.Err, e.Op)
	if e.Endpoint != "" {
		fmt.Fprintf(&b, " at %s", e.Endpoint)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// statusError maps a member's non-200 answer to an *Error.
func statusError(op, ep string, code int, body string) *Error {
	sentinel := ErrBadAnswer
	switch {
	case code == http.StatusUnauthorized:
		sentinel = ErrUnauthorized
	case code == http.StatusForbidden:
		sentinel = ErrForbidden
	case code == http.StatusBadRequest || code == http.StatusConflict:
		sentinel = ErrRefused
	case code == http.StatusMisdirectedRequest:
		sentinel = ErrNotLeader
	case code >= 500:
		sentinel = ErrUnavailable
	}
	return &Error{Op: op, Endpoint: ep, Status: code, Message: strings.TrimSpace(body), Err: sentinel}
}

// Member is one cluster member: id, Raft address, client address.
type Member = httpapi.Member

// TransferResult says whether leadership moved, who leads now and how
// long the member waited.
type TransferResult = httpapi.TransferResult

// Session is one live session as GET /sessions lists it.
type Session = httpapi.Session

// Limits.
const (
	// DefaultTimeout bounds one request to one member (see WithTimeout).
	DefaultTimeout = 10 * time.Second
	// changeExtra is added to the timeout of membership changes: the
	// member may wait for a change in flight and, removing itself while it
	// leads, move leadership first (up to 10 s).
	changeExtra = 15 * time.Second
	// MaxTransferWait is the longest wait TransferLeader accepts (the
	// member's own limit).
	MaxTransferWait = time.Minute
	// maxBody bounds a JSON answer; maxError bounds an error body kept.
	maxBody  = 64 << 20
	maxError = 4096
	// maxListed bounds how many sessions Sessions lists.
	maxListed = 1_000_000
	// maxEndpoints bounds the endpoint list.
	maxEndpoints = 64
)

// Client operates a cluster through its members' HTTP endpoints. It is
// safe for concurrent use. Close releases its idle connections.
type Client struct {
	endpoints []string
	o         options
	http      *http.Client
}

type options struct {
	token   string
	tls     *tls.Config
	timeout time.Duration
	client  *http.Client
}

// Option configures a Client.
type Option func(*options)

// WithToken sends token as the admin credential ("Authorization: Bearer
// token"). Default: none, and admin calls fail with ErrUnauthorized (or
// ErrForbidden on a member without an admin token). Status, MemberList and
// Sessions do not need it.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTLS talks HTTPS with cfg: RootCAs verifies the members, Certificates
// holds the client certificate a mutual-TLS cluster requires. Default:
// plain HTTP. Ignored with WithHTTPClient.
func WithTLS(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithTimeout bounds each request to a member (default DefaultTimeout).
// Membership changes get 15 s more, a transfer its wait more; SnapshotSave
// is bounded by its context only, as a large backup takes long to stream.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithHTTPClient uses c for every request (its transport's TLS settings
// then apply, not WithTLS's; URLs are https:// when WithTLS is given).
// Default: a client of the Client's own, whose idle connections Close
// releases.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// New returns a Client for the members' HTTP endpoints (host:port, at most
// 64). It contacts no one.
func New(endpoints []string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	var eps []string
	for _, ep := range endpoints {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		// No scheme: WithTLS decides between http and https.
		if _, _, err := net.SplitHostPort(ep); err != nil || strings.ContainsAny(ep, "/?#@ ") {
			return nil, fmt.Errorf("%w: endpoint %q: want host:port (no scheme: WithTLS picks https)", ErrInvalid, ep)
		}
		eps = append(eps, ep)
	}
	switch {
	case len(eps) == 0:
		return nil, fmt.Errorf("%w: no HTTP endpoints", ErrInvalid)
	case len(eps) > maxEndpoints:
		return nil, fmt.Errorf("%w: %d endpoints, at most %d", ErrInvalid, len(eps), maxEndpoints)
	case o.timeout <= 0:
		return nil, fmt.Errorf("%w: timeout %v: want a positive duration", ErrInvalid, o.timeout)
	}
	hc := o.client
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = o.tls
		hc = &http.Client{Transport: tr}
	}
	return &Client{endpoints: eps, o: o, http: hc}, nil
}

// Endpoints returns the HTTP endpoints the Client asks.
func (c *Client) Endpoints() []string { return append([]string(nil), c.endpoints...) }

// Close releases idle connections. The Client stays usable.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

func (c *Client) url(ep, path string) string {
	if c.o.tls != nil {
		return "https://" + ep + path
	}
	return "http://" + ep + path
}

// do sends one request to ep and returns the answer when it is 200 OK;
// otherwise the *Error for it. The caller closes the body.
func (c *Client) do(ctx context.Context, op, ep, method, path string, admin bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url(ep, path), nil)
	if err != nil {
		return nil, &Error{Op: op, Endpoint: ep, Message: err.Error(), Err: ErrInvalid}
	}
	if admin && c.o.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &Error{Op: op, Endpoint: ep, Message: err.Error(), Err: ErrUnavailable}
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxError))
		resp.Body.Close()
		return nil, statusError(op, ep, resp.StatusCode, string(body))
	}
	return resp, nil
}

// getJSON GETs path from ep and decodes the answer into v.
func (c *Client) getJSON(ctx context.Context, op, ep, path string, v any) error {
	resp, err := c.do(ctx, op, ep, http.MethodGet, path, false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(v); err != nil {
		return &Error{Op: op, Endpoint: ep, Status: resp.StatusCode, Message: err.Error(), Err: ErrBadAnswer}
	}
	return nil
}

// withTimeout bounds ctx by the Client's timeout plus extra.
func (c *Client) withTimeout(ctx context.Context, extra time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.o.timeout+extra)
}
