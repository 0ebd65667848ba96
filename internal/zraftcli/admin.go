package zraftcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zraft/zraft/node/httpapi"
)

// adminRequest sends an authenticated admin request to one HTTP endpoint
// and returns the answer's body, or an error naming the status.
func adminRequest(ctx context.Context, c common, ep, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.httpURL(ep, path), nil)
	if err != nil {
		return nil, err
	}
	if c.adminToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.adminToken)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %s: %s", method, c.httpURL(ep, path), resp.Status, strings.TrimSpace(string(body)))
	}
	return resp, nil
}

// leaderHTTP returns the HTTP endpoint of the member that leads, from the
// members' /status answers.
func leaderHTTP(ctx context.Context, c common) (string, error) {
	sts := statuses(ctx, c)
	for _, s := range sts {
		if s.Error == "" && s.Role == "leader" {
			return s.HTTP, nil
		}
	}
	for _, s := range sts {
		if s.Error == "" {
			return "", fmt.Errorf("no member leads (member %d answered as %s); try again", s.ID, s.Role)
		}
	}
	return "", noAnswer(sts)
}

func leaderCommand(ctx context.Context, args []string, e env) error {
	if len(args) == 0 || args[0] != "transfer" {
		return fmt.Errorf("%w: want: zraft leader transfer ID [--wait 10s]", errUsage)
	}
	fs := newFlags("leader transfer", "zraft leader transfer ID [--wait D] [flags]", e)
	var c common
	c.register(fs, e)
	wait := fs.Duration("wait", 10*time.Second, "how long to keep asking before giving up (at most 1m)")
	err := parse(fs, args[1:])
	defer c.release()
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: leader transfer takes one member id", errUsage)
	}
	id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
	if err != nil || id == 0 {
		return fmt.Errorf("%w: member id %q: want a positive integer", errUsage, fs.Arg(0))
	}
	if err := c.prepare(e); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+*wait)
	defer cancel()
	sts := statuses(ctx, c)
	var lastErr error
	for _, s := range sts {
		if s.Error != "" {
			lastErr = fmt.Errorf("%s: %s", s.HTTP, s.Error)
			continue
		}
		resp, err := adminRequest(ctx, c, s.HTTP, http.MethodPost,
			fmt.Sprintf("/admin/leader/transfer?id=%d&wait=%s", id, *wait))
		if err != nil {
			return err // the member answered: its refusal is the answer
		}
		var res httpapi.TransferResult
		err = json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&res)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if !res.Moved {
			return fmt.Errorf("leadership did not move to %d within %v (leader is %d); dragonboat's transfer is best effort: try again",
				id, *wait, res.LeaderID)
		}
		fmt.Fprintf(e.stdout, "leader is now %d (moved in %v)\n", res.LeaderID, time.Duration(res.WaitedMS)*time.Millisecond)
		return nil
	}
	if lastErr == nil {
		lastErr = noAnswer(sts)
	}
	return lastErr
}

func snapshotCommand(ctx context.Context, args []string, e env) error {
	if len(args) == 0 || args[0] != "save" {
		return fmt.Errorf("%w: want: zraft snapshot save FILE (restore: node --restore FILE, see docs/operations.md)", errUsage)
	}
	fs := newFlags("snapshot save", "zraft snapshot save FILE [flags]", e)
	var c common
	c.register(fs, e)
	err := parse(fs, args[1:])
	defer c.release()
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: snapshot save takes one file name", errUsage)
	}
	file := fs.Arg(0)
	if err := c.prepare(e); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	ep, err := leaderHTTP(ctx, c)
	if err != nil {
		return err
	}
	resp, err := adminRequest(ctx, c, ep, http.MethodPost, "/admin/snapshot")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// Written next to FILE and renamed: FILE is complete or absent.
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".part-*")
	if err != nil {
		return err
	}
	n, err := io.Copy(tmp, resp.Body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("snapshot save: %w", err)
	}
	fmt.Fprintf(e.stdout, "snapshot saved to %s (%d bytes, from %s)\n", file, n, ep)
	return nil
}

func memberCommand(ctx context.Context, args []string, e env) error {
	const synopsis = "zraft member list | add ID RAFTADDR CLIENTADDR | remove ID"
	if len(args) == 0 {
		return fmt.Errorf("%w: want: %s", errUsage, synopsis)
	}
	sub := args[0]
	fs := newFlags("member "+sub, synopsis+" [flags]", e)
	var c common
	c.register(fs, e)
	err := parse(fs, args[1:])
	defer c.release()
	if err != nil {
		return err
	}
	var path string
	switch {
	case sub == "list" && fs.NArg() == 0:
	case sub == "add" && fs.NArg() == 3:
		id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
		if err != nil || id == 0 {
			return fmt.Errorf("%w: member id %q: want a positive integer", errUsage, fs.Arg(0))
		}
		path = fmt.Sprintf("/admin/members/add?id=%d&raft=%s&client=%s", id, url.QueryEscape(fs.Arg(1)), url.QueryEscape(fs.Arg(2)))
	case sub == "remove" && fs.NArg() == 1:
		id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
		if err != nil || id == 0 {
			return fmt.Errorf("%w: member id %q: want a positive integer", errUsage, fs.Arg(0))
		}
		path = fmt.Sprintf("/admin/members/remove?id=%d", id)
	default:
		return fmt.Errorf("%w: want: %s", errUsage, synopsis)
	}
	if err := c.prepare(e); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+15*time.Second)
	defer cancel()
	if sub == "list" {
		return listMembers(ctx, c, e)
	}
	ep, err := leaderHTTP(ctx, c)
	if err != nil {
		return err
	}
	resp, err := adminRequest(ctx, c, ep, http.MethodPost, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(e.stdout, io.LimitReader(resp.Body, 4096))
	return err
}

// listMembers prints the member directory as the leader serves it.
func listMembers(ctx context.Context, c common, e env) error {
	sts := statuses(ctx, c)
	var from *memberStatus
	for i := range sts {
		if sts[i].Error == "" && (from == nil || sts[i].Role == "leader") {
			from = &sts[i]
		}
	}
	if from == nil {
		return noAnswer(sts)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT\tCLIENT\tLEADER")
	for _, m := range from.Members {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\n", m.ID, m.RaftAddr, m.ClientAddr, m.ID == from.LeaderID)
	}
	return tw.Flush()
}
