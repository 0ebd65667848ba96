package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Fault kinds of the process nemesis.
const (
	faultKill      = "kill"      // kill -9, down for a while, restart
	faultStop      = "stop"      // SIGSTOP, then SIGCONT
	faultPartition = "partition" // nftables drops the member's traffic, then the rules go
	faultConnKill  = "connkill"  // ss -K kills the member's client connections
	faultSkew      = "skew"      // restart with the clock 30 s off, make it lead, kill it
)

// How long each fault lasts, and the quiet time between faults.
const (
	killDown      = 3 * time.Second
	stopFor       = 4 * time.Second
	partitionFor  = 5 * time.Second
	skewHold      = 4 * time.Second
	skewMagnitude = 30 * time.Second
	quiet         = 2 * time.Second
)

// fault is one injected fault and what it cost the clients.
type fault struct {
	kind       string
	member     uint64
	wasLeader  bool
	start, end time.Time // injected, healed
	note       string
	gap        time.Duration // longest time without a successful call
	stall      time.Duration // longest time one busy session went without one
	leaderless time.Duration // longest time the healthy members agreed on no live leader
}

// firewall partitions members with nftables, in a table of its own named
// after the test process, so that it only ever drops this run's traffic.
type firewall struct {
	table string
	ok    bool
	why   string // when !ok
}

const nftTablePrefix = "zraftchaos_"

func nft(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("nft: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func newFirewall() *firewall {
	f := &firewall{table: nftTablePrefix + strconv.Itoa(os.Getpid())}
	if os.Geteuid() != 0 {
		f.why = "partitions need root (nftables)"
		return f
	}
	if _, err := exec.LookPath("nft"); err != nil {
		f.why = "partitions need nft (Debian package nftables)"
		return f
	}
	if err := nft(fmt.Sprintf("add table inet %s\nadd chain inet %[1]s out { type filter hook output priority 0 ; policy accept ; }\n", f.table)); err != nil {
		f.why = "cannot create an nftables table: " + err.Error()
		return f
	}
	f.ok = true
	return f
}

// partition drops every packet to m's raft and client ports and every
// packet m's sockets send (matched by its user id when it has its own).
func (f *firewall) partition(m *member) error {
	ports := fmt.Sprintf("{ %d, %d, %d }", m.raftPort, m.clientPort, m.httpPort)
	script := fmt.Sprintf("add rule inet %s out tcp dport %s drop\nadd rule inet %[1]s out tcp sport %[2]s drop\n", f.table, ports)
	if m.uid >= 0 {
		script += fmt.Sprintf("add rule inet %s out meta skuid %d drop\n", f.table, m.uid)
	}
	return nft(script)
}

func (f *firewall) heal() error { return nft(fmt.Sprintf("flush chain inet %s out\n", f.table)) }

func (f *firewall) close() {
	if f.ok {
		_ = nft(fmt.Sprintf("delete table inet %s\n", f.table))
	}
}

// removeStaleTables deletes tables left by chaos runs whose process is gone
// (killed before its cleanup ran): their rules would drop this run's traffic.
func removeStaleTables() {
	if os.Geteuid() != 0 {
		return
	}
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[1] != "inet" || !strings.HasPrefix(fields[2], nftTablePrefix) {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(fields[2], nftTablePrefix))
		if err == nil && syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = nft("delete table inet " + fields[2] + "\n")
		}
	}
}

// killConns kills every TCP connection to or from m's client port.
func killConns(m *member) (string, error) {
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: ss -K needs root", errSkip)
	}
	if _, err := exec.LookPath("ss"); err != nil {
		return "", fmt.Errorf("%w: ss -K needs ss (Debian package iproute2)", errSkip)
	}
	filter := fmt.Sprintf("( sport = :%d or dport = :%d )", m.clientPort, m.clientPort)
	out, err := exec.Command("ss", "-K", "-tn", filter).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ss -K: %v: %s", err, bytes.TrimSpace(out))
	}
	killed := max(0, len(strings.Split(strings.TrimSpace(string(out)), "\n"))-1)
	return fmt.Sprintf("%d sockets", killed), nil
}

// monitor polls every member's /status and remembers which leader each
// named, so that the time without an agreed leader can be computed later.
type monitor struct {
	c       *procCluster
	mu      sync.Mutex
	samples map[uint64][]sample
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

type sample struct {
	at     time.Time
	leader uint64 // 0: no answer or no leader known
}

const pollEvery = 25 * time.Millisecond

func startMonitor(c *procCluster) *monitor {
	ctx, cancel := context.WithCancel(context.Background())
	mon := &monitor{c: c, samples: map[uint64][]sample{}, stop: cancel}
	for _, m := range c.members {
		mon.wg.Add(1)
		go func(m *member) {
			defer mon.wg.Done()
			for ctx.Err() == nil {
				s, ok := c.status(m)
				smp := sample{at: time.Now()}
				if ok {
					smp.leader = s.LeaderID
				}
				mon.mu.Lock()
				mon.samples[m.id] = append(mon.samples[m.id], smp)
				mon.mu.Unlock()
				sleep(ctx, pollEvery)
			}
		}(m)
	}
	return mon
}

func (mon *monitor) close() {
	mon.stop()
	mon.wg.Wait()
}

// leaderless returns the longest stretch within [from, to] during which the
// members other than faulty did not all name the same leader (itself not
// faulty), sampled every pollEvery.
func (mon *monitor) leaderless(faulty uint64, from, to time.Time) time.Duration {
	mon.mu.Lock()
	defer mon.mu.Unlock()
	var longest, cur time.Duration
	for t := from; !t.After(to); t = t.Add(pollEvery) {
		var leader uint64
		agree := true
		for id, ss := range mon.samples {
			if id == faulty {
				continue
			}
			s, ok := latest(ss, t)
			if !ok || s.leader == 0 || s.leader == faulty || t.Sub(s.at) > 500*time.Millisecond ||
				(leader != 0 && s.leader != leader) {
				agree = false
				break
			}
			leader = s.leader
		}
		if agree {
			cur = 0
			continue
		}
		cur += pollEvery
		longest = max(longest, cur)
	}
	return longest
}

func latest(ss []sample, t time.Time) (sample, bool) {
	var best sample
	found := false
	for _, s := range ss {
		if s.at.After(t) {
			break
		}
		best, found = s, true
	}
	return best, found
}

// nemesis injects faults into a process cluster, one member at a time.
type nemesis struct {
	t      testing.TB
	c      *procCluster
	fw     *firewall
	rng    *rand.Rand
	target string
	faults []fault
	skews  int
	// problems are failures of the nemesis itself to restore the cluster
	// (no leader with a healthy majority, a member that cannot restart).
	problems []string
}

func (n *nemesis) logf(format string, args ...any) { n.t.Logf(format, args...) }

// leader returns the agreed leader, waiting for one.
func (n *nemesis) leader() *member {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := n.c.waitLeader(ctx, nil)
	if err != nil {
		n.problems = append(n.problems, fmt.Sprintf("%s: %v", time.Now().Format(tsFormat), err))
		return nil
	}
	return l
}

// pick chooses the member a fault hits.
func (n *nemesis) pick(l *member) *member {
	leader := false
	switch n.target {
	case "leader":
		leader = true
	case "follower":
	default:
		leader = n.rng.IntN(3) < 2
	}
	if leader {
		return l
	}
	var fs []*member
	for _, m := range n.c.members {
		if m != l {
			fs = append(fs, m)
		}
	}
	return fs[n.rng.IntN(len(fs))]
}

// run injects faults of the given kinds in turn until d has passed.
func (n *nemesis) run(kinds []string, d time.Duration) {
	end := time.Now().Add(d)
	for i := 0; time.Now().Before(end); i++ {
		time.Sleep(quiet)
		l := n.leader()
		if l == nil {
			return
		}
		kind := kinds[i%len(kinds)]
		m := n.pick(l)
		if kind == faultConnKill {
			// Clients are connected to the leader only.
			m = l
		}
		f := fault{kind: kind, member: m.id, wasLeader: m == l, start: time.Now()}
		err := n.inject(&f, m)
		f.end = time.Now()
		if err != nil {
			if isSkip(err) {
				n.logf("fault %s skipped: %v", kind, err)
				continue
			}
			n.problems = append(n.problems, fmt.Sprintf("fault %s on member %d: %v", kind, m.id, err))
			return
		}
		n.logf("%s fault %-9s member %d (leader: %v) for %.1fs %s", f.start.Format(tsFormat), kind, m.id, f.wasLeader,
			f.end.Sub(f.start).Seconds(), f.note)
		n.faults = append(n.faults, f)
	}
	time.Sleep(quiet)
}

func isSkip(err error) bool {
	for e := err; e != nil; {
		if e == errSkip {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

func (n *nemesis) inject(f *fault, m *member) error {
	c := n.c
	switch f.kind {
	case faultKill:
		if err := c.kill(m); err != nil {
			return err
		}
		time.Sleep(killDown)
		return c.start(m, 0)
	case faultStop:
		if _, err := c.signal(m, syscall.SIGSTOP, false); err != nil {
			return err
		}
		time.Sleep(stopFor)
		_, err := c.signal(m, syscall.SIGCONT, false)
		return err
	case faultPartition:
		if !n.fw.ok {
			return fmt.Errorf("%w: %s", errSkip, n.fw.why)
		}
		if err := n.fw.partition(m); err != nil {
			return err
		}
		time.Sleep(partitionFor)
		return n.fw.heal()
	case faultConnKill:
		note, err := killConns(m)
		f.note = note
		return err
	case faultSkew:
		return n.skew(f, m)
	}
	return fmt.Errorf("unknown fault kind %q", f.kind)
}

// skew restarts m with its clock 30 s off (ahead, then behind, in turn), makes
// it the leader by pausing whoever else leads (a skewed member counts as
// healthy: Raft must not depend on clocks; at most six pauses), lets it lead for a while and
// then kills it, so that a leader with an unskewed clock takes over the
// sessions whose liveness the skewed one recorded; then m restarts with a
// correct clock.
func (n *nemesis) skew(f *fault, m *member) error {
	c := n.c
	// Ahead first: a new leader whose clock is ahead is the case that
	// expires live sessions when stamps of two clocks are compared.
	skew := skewMagnitude
	if n.skews%2 == 1 {
		skew = -skew
	}
	n.skews++
	if err := c.kill(m); err != nil {
		return err
	}
	if err := c.start(m, skew); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.waitCaughtUp(ctx, m); err != nil {
		return err
	}
	time.Sleep(skewHold)
	led := false
	for try := 0; try < 6; try++ {
		l, err := c.waitLeader(ctx, nil)
		if err != nil {
			return err
		}
		if l == m {
			led = true
			break
		}
		// Pause the leader until another member leads, then resume it.
		if _, err := c.signal(l, syscall.SIGSTOP, false); err != nil {
			return err
		}
		_, err = c.waitLeader(ctx, l)
		if _, err2 := c.signal(l, syscall.SIGCONT, false); err2 != nil {
			return err2
		}
		if err != nil {
			return err
		}
		time.Sleep(quiet)
	}
	f.note = fmt.Sprintf("(clock %+v; skewed member led: %v)", skew, led)
	if led {
		time.Sleep(skewHold)
		// A leader whose clock is ahead stamps its proposals ahead, and the
		// cluster time is the largest stamp applied: that shows the skew
		// took effect (a clock behind cannot be seen this way).
		if st, ok := c.status(m); ok && skew > 0 && time.Unix(0, st.Clock).Before(time.Now().Add(skew/2)) {
			return fmt.Errorf("member %d led with its clock %v ahead, but the cluster time %s did not move ahead: the skew had no effect",
				m.id, skew, time.Unix(0, st.Clock).Format(tsFormat))
		}
	}
	if err := c.kill(m); err != nil {
		return err
	}
	time.Sleep(killDown)
	return c.start(m, 0)
}
