package zraftcli

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zraft/zraft/admin"
)

// memberStatus is one member's status as the admin API reports it (the
// JSON of zraft status --json).
type memberStatus = admin.MemberStatus

// statuses asks every HTTP endpoint for its status, concurrently, each
// bounded by the command's timeout, with the lag columns filled.
func statuses(ctx context.Context, c common) ([]memberStatus, error) {
	a, err := c.adminClient()
	if err != nil {
		return nil, err
	}
	sts, err := a.Status(ctx)
	return sts, cliError(err)
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
	sts, stErr := statuses(ctx, c)
	if sts == nil {
		return stErr
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
	return stErr
}

func sessionsCommand(ctx context.Context, args []string, e env) error {
	c, asJSON, err := listingFlags("sessions", args, e)
	defer c.release()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	a, err := c.adminClient()
	if err != nil {
		return err
	}
	all, err := a.Sessions(ctx)
	if err != nil {
		return cliError(err)
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
