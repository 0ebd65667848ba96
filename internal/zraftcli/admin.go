package zraftcli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zraft/zraft/admin"
)

// adminClient returns the Go admin API client for the command's HTTP
// endpoints, credential and TLS settings (after prepare): every command
// that talks to the HTTP endpoints goes through it, so the CLI and the Go
// API cannot drift.
func (c *common) adminClient() (*admin.Client, error) {
	a, err := admin.New(c.httpList(), admin.WithToken(c.adminToken), admin.WithTLS(c.tls),
		admin.WithTimeout(c.timeout), admin.WithHTTPClient(c.client))
	if errors.Is(err, admin.ErrInvalid) {
		return nil, fmt.Errorf("%w: --http: %v", errUsage, err)
	}
	return a, err
}

// cliError adds what to check to an error of the admin API.
func cliError(err error) error {
	var e *admin.Error
	if !errors.As(err, &e) {
		return err
	}
	switch {
	case errors.Is(err, admin.ErrUnauthorized):
		return fmt.Errorf("%w (send the admin token: --admin-token or ZRAFT_ADMIN_TOKEN)", err)
	case strings.Contains(e.Op, admin.NoAnswer):
		return fmt.Errorf("%w (are the HTTP endpoints right? --http or ZRAFT_HTTP; TLS: --cacert, --cert, --key)", err)
	}
	return err
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
	if *wait <= 0 || *wait > admin.MaxTransferWait {
		return fmt.Errorf("%w: --wait %v: want a duration up to %v", errUsage, *wait, admin.MaxTransferWait)
	}
	if err := c.prepare(e); err != nil {
		return err
	}
	a, err := c.adminClient()
	if err != nil {
		return err
	}
	res, err := a.TransferLeader(ctx, id, *wait)
	if err != nil {
		return cliError(err)
	}
	fmt.Fprintf(e.stdout, "leader is now %d (moved in %v)\n", res.LeaderID, time.Duration(res.WaitedMS)*time.Millisecond)
	return nil
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
	a, err := c.adminClient()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	info, err := a.SnapshotSaveFile(ctx, file)
	if err != nil {
		return cliError(err)
	}
	fmt.Fprintf(e.stdout, "snapshot saved to %s (%d bytes, from %s)\n", file, info.Bytes, info.From)
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
	var id uint64
	switch {
	case sub == "list" && fs.NArg() == 0:
	case sub == "add" && fs.NArg() == 3, sub == "remove" && fs.NArg() == 1:
		if id, err = strconv.ParseUint(fs.Arg(0), 10, 64); err != nil || id == 0 {
			return fmt.Errorf("%w: member id %q: want a positive integer", errUsage, fs.Arg(0))
		}
	default:
		return fmt.Errorf("%w: want: %s", errUsage, synopsis)
	}
	if err := c.prepare(e); err != nil {
		return err
	}
	a, err := c.adminClient()
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		return cliError(listMembers(ctx, a, e))
	case "add":
		if err := a.MemberAdd(ctx, admin.Member{ID: id, RaftAddr: fs.Arg(1), ClientAddr: fs.Arg(2)}); err != nil {
			return cliError(err)
		}
		fmt.Fprintf(e.stdout, "member %d added; start it with node --join --id %d\n", id, id)
	default:
		if err := a.MemberRemove(ctx, id); err != nil {
			return cliError(err)
		}
		fmt.Fprintf(e.stdout, "member %d removed\n", id)
	}
	return nil
}

// listMembers prints the member directory as the leader serves it.
func listMembers(ctx context.Context, a *admin.Client, e env) error {
	ms, err := a.MemberList(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT\tCLIENT\tLEADER")
	for _, m := range ms.Members {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\n", m.ID, m.RaftAddr, m.ClientAddr, m.ID == ms.LeaderID)
	}
	return tw.Flush()
}
