package zraftcli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zraft/zraft/node/httpapi"
)

// memberStatus is one member's /status answer, or why there is none.
type memberStatus struct {
	httpapi.Status
	HTTP  string `json:"http"`
	Error string `json:"error,omitempty"`
	// Lag is how many log entries the member has applied fewer than the
	// leader (absent when no leader answered); CatchingUp is true past
	// catchUpLag.
	Lag        *uint64 `json:"lag,omitempty"`
	CatchingUp bool    `json:"catching_up"`
}

// catchUpLag is the lag, in log entries, past which status calls a member
// catching up (a new member loading a snapshot, one back from a pause).
const catchUpLag = 100

// addLag fills Lag and CatchingUp from the leader's applied index.
func addLag(sts []memberStatus) {
	var leader *memberStatus
	for i := range sts {
		if sts[i].Error == "" && sts[i].Role == "leader" {
			leader = &sts[i]
		}
	}
	if leader == nil {
		return
	}
	for i := range sts {
		s := &sts[i]
		if s.Error != "" {
			continue
		}
		lag := uint64(0)
		if leader.Applied > s.Applied {
			lag = leader.Applied - s.Applied
		}
		s.Lag = &lag
		s.CatchingUp = lag > catchUpLag
	}
}

// maxBody bounds what the CLI reads from one HTTP answer.
const maxBody = 64 << 20

func getJSON(ctx context.Context, c common, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, v)
}

// statuses asks every HTTP endpoint for its status, concurrently, each
// bounded by the command's timeout.
func statuses(ctx context.Context, c common) []memberStatus {
	eps := c.httpList()
	out := make([]memberStatus, len(eps))
	done := make(chan struct{}, len(eps))
	for i, ep := range eps {
		go func() {
			defer func() { done <- struct{}{} }()
			var s memberStatus
			if err := getJSON(ctx, c, c.httpURL(ep, "/status"), &s); err != nil {
				s = memberStatus{Status: httpapi.Status{Role: "unreachable"}, Error: err.Error()}
			}
			s.HTTP = ep
			out[i] = s
		}()
	}
	for range eps {
		<-done
	}
	return out
}

// listingFlags parses the flags of a command that takes no arguments and
// prints a table or, with --json, JSON.
func listingFlags(name string, args []string, e env) (c common, asJSON bool, err error) {
	fs := newFlags(name, "zraft "+name+" [--json] [flags]", e)
	c.register(fs, e)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return c, false, err
	}
	if fs.NArg() > 0 {
		return c, false, fmt.Errorf("%w: %s takes no arguments", errUsage, name)
	}
	return c, asJSON, c.prepare(e)
}

func statusCommand(ctx context.Context, args []string, e env) error {
	c, asJSON, err := listingFlags("status", args, e)
	defer c.release()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	sts := statuses(ctx, c)
	addLag(sts)
	reachable := 0
	for _, s := range sts {
		if s.Error == "" {
			reachable++
		}
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sts); err != nil {
			return err
		}
	} else {
		addr := map[uint64]string{}
		for _, s := range sts {
			for _, m := range s.Members {
				addr[m.ID] = m.ClientAddr
			}
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCLIENT\tHTTP\tROLE\tLEADER\tTERM\tSESSIONS\tAPPLIED\tLAG\tCATCHING UP")
		for _, s := range sts {
			if s.Error != "" {
				fmt.Fprintf(tw, "-\t-\t%s\tunreachable\t-\t-\t-\t-\t-\t-\n", s.HTTP)
				continue
			}
			lag, catching := "-", "-"
			if s.Lag != nil {
				lag, catching = fmt.Sprint(*s.Lag), fmt.Sprint(s.CatchingUp)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.ID, addr[s.ID], s.HTTP, s.Role, s.LeaderID, s.Term,
				s.Sessions, s.Applied, lag, catching)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if reachable == 0 {
		return noAnswer(sts)
	}
	return nil
}

// noAnswer is the error when no member answered: the first member's reason
// (a refused TLS handshake, 403 without a client certificate, a closed port)
// and what to check.
func noAnswer(sts []memberStatus) error {
	reason := ""
	if len(sts) > 0 {
		reason = ": " + sts[0].HTTP + ": " + sts[0].Error
	}
	return fmt.Errorf("no member answered (are the HTTP endpoints right? --http or ZRAFT_HTTP; TLS: --cacert, --cert, --key)%s", reason)
}

// maxListed bounds how many sessions the command lists.
const maxListed = 1_000_000

func sessionsCommand(ctx context.Context, args []string, e env) error {
	c, asJSON, err := listingFlags("sessions", args, e)
	defer c.release()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// Any member answers linearizably; prefer the leader (no forwarding).
	sts := statuses(ctx, c)
	sort.SliceStable(sts, func(i, j int) bool { return sts[i].Role == "leader" && sts[j].Role != "leader" })
	var all []httpapi.Session
	var lastErr error
	for _, s := range sts {
		if s.Error != "" {
			continue
		}
		all, lastErr = listSessions(ctx, c, s.HTTP)
		if lastErr == nil {
			break
		}
	}
	if all == nil && lastErr == nil {
		return noAnswer(sts)
	}
	if lastErr != nil {
		return lastErr
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tTIMEOUT\tOPENED\tLAST SEEN\tPENDING\tCACHED\tCAPABILITIES")
	for _, s := range all {
		caps := make([]string, 0, len(s.Capabilities))
		for k, v := range s.Capabilities {
			caps = append(caps, k+"="+v)
		}
		sort.Strings(caps)
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%d\t%d\t%s\n", s.ID, time.Duration(s.TimeoutMS)*time.Millisecond,
			stamp(s.OpenedAtNS), stamp(s.LivenessNS), s.PendingServerRequests, s.CachedResponses, strings.Join(caps, ","))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d sessions\n", len(all))
	return nil
}

func stamp(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format("15:04:05.000")
}

func listSessions(ctx context.Context, c common, httpAddr string) ([]httpapi.Session, error) {
	all := []httpapi.Session{}
	after := ""
	for len(all) < maxListed {
		url := c.httpURL(httpAddr, fmt.Sprintf("/sessions?limit=%d", httpapi.MaxSessionsPage))
		if after != "" {
			url += "&after=" + after
		}
		var page []httpapi.Session
		if err := getJSON(ctx, c, url, &page); err != nil {
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
