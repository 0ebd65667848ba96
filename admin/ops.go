package admin

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/zraft/zraft/node/httpapi"
)

// MemberStatus is one member's /status answer, or why there is none.
type MemberStatus struct {
	httpapi.Status
	// HTTP is the endpoint asked.
	HTTP string `json:"http"`
	// Error is why the member did not answer (Role is then
	// "unreachable"); Err is the same as a typed error.
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
	// Lag is how many log entries the member has applied fewer than the
	// leader (absent when no leader answered); CatchingUp is true past
	// CatchUpLag entries.
	Lag        *uint64 `json:"lag,omitempty"`
	CatchingUp bool    `json:"catching_up"`
}

// NoAnswer is in the text of every error that says no member answered.
const NoAnswer = "no member answered"

// CatchUpLag is the lag, in log entries, past which Status calls a member
// catching up (a new member loading a snapshot, one back from a pause).
const CatchUpLag = 100

// Status asks every endpoint for its status, concurrently, each bounded by
// the timeout, and fills Lag and CatchingUp from the leader's applied
// index. It returns one entry per endpoint, in the Client's order, and an
// error matching ErrUnavailable (with the first member's reason) when none
// answered.
func (c *Client) Status(ctx context.Context) ([]MemberStatus, error) {
	ctx, cancel := c.withTimeout(ctx, 0)
	defer cancel()
	out := make([]MemberStatus, len(c.endpoints))
	done := make(chan struct{}, len(c.endpoints))
	for i, ep := range c.endpoints {
		go func() {
			defer func() { done <- struct{}{} }()
			var s MemberStatus
			if err := c.getJSON(ctx, "status", ep, "/status", &s); err != nil {
				s = MemberStatus{Status: httpapi.Status{Role: "unreachable"}, Error: err.Error(), Err: err}
			}
			s.HTTP = ep
			out[i] = s
		}()
	}
	for range c.endpoints {
		<-done
	}
	addLag(out)
	for _, s := range out {
		if s.Err == nil {
			return out, nil
		}
	}
	return out, noAnswer("status", out)
}

// addLag fills Lag and CatchingUp from the leader's applied index.
func addLag(sts []MemberStatus) {
	var leader *MemberStatus
	for i := range sts {
		if sts[i].Err == nil && sts[i].Role == "leader" {
			leader = &sts[i]
		}
	}
	if leader == nil {
		return
	}
	for i := range sts {
		s := &sts[i]
		if s.Err != nil {
			continue
		}
		lag := uint64(0)
		if leader.Applied > s.Applied {
			lag = leader.Applied - s.Applied
		}
		s.Lag = &lag
		s.CatchingUp = lag > CatchUpLag
	}
}

// noAnswer is the error when no member answered: the first one's reason,
// and its kind (a 403 stays ErrForbidden).
func noAnswer(op string, sts []MemberStatus) error {
	var first *Error
	if len(sts) > 0 && errors.As(sts[0].Err, &first) {
		return &Error{Op: op + ": " + NoAnswer + "; the first", Endpoint: first.Endpoint, Status: first.Status,
			Message: first.Message, Err: first.Err}
	}
	return &Error{Op: op + ": " + NoAnswer, Err: ErrUnavailable}
}

// Leader returns the status of the member that leads.
func (c *Client) Leader(ctx context.Context) (MemberStatus, error) {
	sts, err := c.Status(ctx)
	if err != nil {
		return MemberStatus{}, err
	}
	return leaderOf("leader", sts)
}

func leaderOf(op string, sts []MemberStatus) (MemberStatus, error) {
	for _, s := range sts {
		if s.Err == nil && s.Role == "leader" {
			return s, nil
		}
	}
	for _, s := range sts {
		if s.Err == nil {
			return MemberStatus{}, &Error{Op: op, Endpoint: s.HTTP, Err: ErrUnavailable,
				Message: fmt.Sprintf("no member leads (member %d answered as %s, leader %d); try again", s.ID, s.Role, s.LeaderID)}
		}
	}
	return MemberStatus{}, noAnswer(op, sts)
}

// Membership is the member directory as one member serves it.
type Membership struct {
	Members  []Member // by id
	LeaderID uint64   // 0: no leader known
	From     string   // the HTTP endpoint that answered
}

// MemberList returns the member directory (the members clients learn of),
// as the leader serves it, or any member when none leads.
func (c *Client) MemberList(ctx context.Context) (Membership, error) {
	sts, err := c.Status(ctx)
	if err != nil {
		return Membership{}, err
	}
	var from *MemberStatus
	for i := range sts {
		if sts[i].Err == nil && (from == nil || sts[i].Role == "leader") {
			from = &sts[i]
		}
	}
	ms := append([]Member(nil), from.Members...)
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return Membership{Members: ms, LeaderID: from.LeaderID, From: from.HTTP}, nil
}

// MemberAdd adds a voting member (asked of the leader): the directory
// records its client address, then Raft's membership takes it. Start the
// member afterwards with node --join and an empty data dir. Refusals
// (ErrRefused): an id in use or once removed, a Raft address in use, a
// change in flight, a full cluster.
func (c *Client) MemberAdd(ctx context.Context, m Member) error {
	const op = "member add"
	if m.ID == 0 || m.RaftAddr == "" || m.ClientAddr == "" {
		return &Error{Op: op, Message: "want a non-zero id, a Raft address and a client address", Err: ErrInvalid}
	}
	q := url.Values{"id": {fmt.Sprint(m.ID)}, "raft": {m.RaftAddr}, "client": {m.ClientAddr}}
	return c.change(ctx, op, "/admin/members/add?"+q.Encode())
}

// MemberRemove removes a voting member (asked of the leader; a leader that
// removes itself hands leadership over first). Refusals (ErrRefused): not
// a member, the last member, a change in flight.
func (c *Client) MemberRemove(ctx context.Context, id uint64) error {
	const op = "member remove"
	if id == 0 {
		return &Error{Op: op, Message: "want a non-zero member id", Err: ErrInvalid}
	}
	return c.change(ctx, op, fmt.Sprintf("/admin/members/remove?id=%d", id))
}

// change sends a membership change to the leader. A member that answers
// it does not lead (leadership moved after the client found the leader) is
// left for the leader found again, after notLeaderPause, until the deadline.
func (c *Client) change(ctx context.Context, op, path string) error {
	ctx, cancel := c.withTimeout(ctx, changeExtra)
	defer cancel()
	var notLeader error // the last "not the leader" answer
	for {
		l, err := c.leaderFor(ctx, op)
		if err != nil {
			if notLeader != nil && ctx.Err() != nil {
				// The time ran out while finding the leader again: what
				// the caller needs to know is the member's answer.
				return notLeader
			}
			return err
		}
		resp, err := c.do(ctx, op, l.HTTP, http.MethodPost, path, true)
		if errors.Is(err, ErrNotLeader) {
			notLeader = err
			select {
			case <-ctx.Done():
				return err
			case <-time.After(notLeaderPause):
				continue
			}
		}
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxError))
		return resp.Body.Close()
	}
}

// notLeaderPause is how long a membership change waits before finding the
// leader again after a member said it does not lead: about an election.
const notLeaderPause = 200 * time.Millisecond

// leaderFor finds the leader for op.
func (c *Client) leaderFor(ctx context.Context, op string) (MemberStatus, error) {
	sts, err := c.Status(ctx)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Op = op
		}
		return MemberStatus{}, err
	}
	return leaderOf(op, sts)
}

// TransferLeader moves leadership to member id, asking again until it
// leads or wait (at most MaxTransferWait) passes. When it did not move the
// result says who leads and the error matches ErrNotMoved; a target that
// is not a voting member matches ErrRefused.
func (c *Client) TransferLeader(ctx context.Context, id uint64, wait time.Duration) (TransferResult, error) {
	const op = "leader transfer"
	if id == 0 || wait <= 0 || wait > MaxTransferWait {
		return TransferResult{}, &Error{Op: op, Err: ErrInvalid,
			Message: fmt.Sprintf("want a non-zero member id and a wait in (0, %v]", MaxTransferWait)}
	}
	ctx, cancel := c.withTimeout(ctx, wait)
	defer cancel()
	sts, err := c.Status(ctx)
	if err != nil {
		return TransferResult{}, err
	}
	for _, s := range sts {
		if s.Err != nil {
			continue
		}
		// The first member that answers is asked: any member can.
		resp, err := c.do(ctx, op, s.HTTP, http.MethodPost, fmt.Sprintf("/admin/leader/transfer?id=%d&wait=%s", id, wait), true)
		if err != nil {
			return TransferResult{}, err
		}
		var res TransferResult
		err = json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&res)
		resp.Body.Close()
		if err != nil {
			return TransferResult{}, &Error{Op: op, Endpoint: s.HTTP, Status: http.StatusOK, Message: err.Error(), Err: ErrBadAnswer}
		}
		if !res.Moved {
			return res, &Error{Op: op, Endpoint: s.HTTP, Err: ErrNotMoved,
				Message: fmt.Sprintf("leadership did not move to %d within %v (leader is %d); the transfer is best effort: try again", id, wait, res.LeaderID)}
		}
		return res, nil
	}
	return TransferResult{}, noAnswer(op, sts)
}

// SnapshotInfo describes a backup written by SnapshotSave.
type SnapshotInfo struct {
	Bytes int64  // bytes written
	Files int    // files in the backup (tar entries)
	From  string // the HTTP endpoint of the member (the leader) it came from
}

// SnapshotSave streams a backup of the replicated state (sessions,
// response caches, the application's state, the membership) from the
// leader into w: a tar stream that node --restore (node.Restore) reads. The
// stream is checked as it is copied: a truncated or malformed one fails
// with ErrBadAnswer (w then holds a partial copy: discard it). Bounded by
// ctx only.
func (c *Client) SnapshotSave(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	const op = "snapshot save"
	lctx, cancel := c.withTimeout(ctx, 0)
	l, err := c.leaderFor(lctx, op)
	cancel()
	if err != nil {
		return SnapshotInfo{}, err
	}
	resp, err := c.do(ctx, op, l.HTTP, http.MethodPost, "/admin/snapshot", true)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer resp.Body.Close()
	cw := &countWriter{w: w}
	tr := tar.NewReader(io.TeeReader(resp.Body, cw))
	info := SnapshotInfo{From: l.HTTP}
	for {
		_, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			_, err = io.Copy(io.Discard, tr)
		}
		if err != nil {
			if cw.err != nil {
				return info, &Error{Op: op, Endpoint: l.HTTP, Message: cw.err.Error(), Err: ErrWrite}
			}
			return info, &Error{Op: op, Endpoint: l.HTTP, Message: "backup stream: " + err.Error(), Err: ErrBadAnswer}
		}
		info.Files++
	}
	// The rest of the stream (the tar trailer's padding) belongs to the file.
	if _, err := io.Copy(io.Discard, io.TeeReader(io.LimitReader(resp.Body, 1<<20), cw)); err != nil || cw.err != nil {
		return info, &Error{Op: op, Endpoint: l.HTTP, Message: fmt.Sprintf("backup stream: %v %v", err, cw.err), Err: ErrBadAnswer}
	}
	info.Bytes = cw.n
	if !cw.endsWithZeros() {
		// Cut at an entry boundary: the tar reader sees a clean end, but
		// the end-of-archive marker (two zero blocks) is missing.
		return info, &Error{Op: op, Endpoint: l.HTTP, Message: "backup stream ends without the tar end-of-archive marker (cut short)", Err: ErrBadAnswer}
	}
	if info.Files == 0 {
		return info, &Error{Op: op, Endpoint: l.HTTP, Message: "empty backup", Err: ErrBadAnswer}
	}
	return info, nil
}

// countWriter counts what it writes and keeps the last trailerSize bytes.
type countWriter struct {
	w    io.Writer
	n    int64
	err  error
	tail []byte
}

// trailerSize is the tar end-of-archive marker: two zero blocks.
const trailerSize = 1024

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.tail = append(c.tail, p[:n]...)
	if len(c.tail) > trailerSize {
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-trailerSize:]...)
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

func (c *countWriter) endsWithZeros() bool {
	if len(c.tail) < trailerSize {
		return false
	}
	for _, b := range c.tail {
		if b != 0 {
			return false
		}
	}
	return true
}

// SnapshotSaveFile is SnapshotSave into file, written next to it and
// synced, then renamed: file is complete or untouched.
func (c *Client) SnapshotSaveFile(ctx context.Context, file string) (SnapshotInfo, error) {
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".part-*")
	if err != nil {
		return SnapshotInfo{}, &Error{Op: "snapshot save", Message: err.Error(), Err: ErrWrite}
	}
	info, err := c.SnapshotSave(ctx, tmp)
	if err == nil {
		if err = tmp.Sync(); err != nil {
			err = &Error{Op: "snapshot save", Message: err.Error(), Err: ErrWrite}
		}
	}
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = &Error{Op: "snapshot save", Message: cerr.Error(), Err: ErrWrite}
	}
	if err == nil {
		if rerr := os.Rename(tmp.Name(), file); rerr != nil {
			err = &Error{Op: "snapshot save", Message: rerr.Error(), Err: ErrWrite}
		}
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return info, err
}

// Sessions lists the live sessions (paged, at most 1,000,000), from the
// leader when one answers, else from the first member that does.
func (c *Client) Sessions(ctx context.Context) ([]Session, error) {
	const op = "sessions"
	ctx, cancel := c.withTimeout(ctx, 0)
	defer cancel()
	sts, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	// Any member answers linearizably; prefer the leader (no forwarding).
	sort.SliceStable(sts, func(i, j int) bool { return sts[i].Role == "leader" && sts[j].Role != "leader" })
	var lastErr error
	for _, s := range sts {
		if s.Err != nil {
			continue
		}
		all, err := c.listSessions(ctx, op, s.HTTP)
		if err == nil {
			return all, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func (c *Client) listSessions(ctx context.Context, op, ep string) ([]Session, error) {
	all := []Session{}
	after := ""
	for len(all) < maxListed {
		path := fmt.Sprintf("/sessions?limit=%d", httpapi.MaxSessionsPage)
		if after != "" {
			path += "&after=" + url.QueryEscape(after)
		}
		var page []Session
		if err := c.getJSON(ctx, op, ep, path, &page); err != nil {
			return nil, err
		}
		all = append(all, page...)
		if len(page) < httpapi.MaxSessionsPage {
			break
		}
		after = page[len(page)-1].ID
	}
	return all, nil
}
