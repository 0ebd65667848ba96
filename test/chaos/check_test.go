package chaos

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// registerModel is a register whose state is its value ("" when the key
// has none). Writes with an unknown outcome may have taken effect or not.
var registerModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(string), input.(regInput), output.(regOutput)
		switch in.op {
		case opGet:
			return out.value == s, s
		case opSet:
			return true, in.value
		default: // cas
			switch {
			case out.unknown:
				if s == in.expected {
					return true, in.value
				}
				return true, s
			case out.mismatch:
				return s != "" && s != in.expected, s
			case out.notFound:
				return s == "", s
			default:
				return s == in.expected, in.value
			}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		var res string
		switch {
		case out.unknown:
			res = "unknown"
		case in.op == opGet:
			res = fmt.Sprintf("%q", out.value)
		case out.mismatch:
			res = "mismatch"
		case out.notFound:
			res = "not found"
		default:
			res = "ok"
		}
		switch in.op {
		case opGet:
			return "get -> " + res
		case opSet:
			return fmt.Sprintf("set %q -> %s", in.value, res)
		default:
			return fmt.Sprintf("cas %q->%q -> %s", in.expected, in.value, res)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// checkTimeout bounds the linearizability check of one key's history; a
// check that does not finish is reported as inconclusive (a failure: it
// proves nothing).
const checkTimeout = 60 * time.Second

// checkLinearizable checks each key's history and returns one problem per
// key that is not linearizable; for those it writes porcupine's
// visualization into a new temporary directory named prefix*.
func checkLinearizable(h *history, prefix string) (problems []string, stats string) {
	h.mu.Lock()
	byKey := map[string][]porcupine.Operation{}
	unknown := 0
	for _, r := range h.ops {
		ret := r.ret.Sub(h.start).Nanoseconds()
		if r.ret.IsZero() {
			ret = math.MaxInt64 // pending forever
			unknown++
		}
		byKey[r.key] = append(byKey[r.key], porcupine.Operation{ClientId: r.session, Input: r.in,
			Call: r.call.Sub(h.start).Nanoseconds(), Output: r.out, Return: ret})
	}
	h.mu.Unlock()
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		ops := byKey[k]
		res, info := porcupine.CheckOperationsVerbose(registerModel, ops, checkTimeout)
		parts = append(parts, fmt.Sprintf("%s: %d ops %s", k, len(ops), res))
		switch res {
		case porcupine.Ok:
		case porcupine.Unknown:
			problems = append(problems, fmt.Sprintf("linearizability of key %s (%d ops) inconclusive after %v", k, len(ops), checkTimeout))
		default:
			path := filepath.Join(outDir(prefix), "linearizability-"+k+".html")
			if err := porcupine.VisualizePath(registerModel, info, path); err != nil {
				path = "(visualization failed: " + err.Error() + ")"
			}
			problems = append(problems, fmt.Sprintf("history of key %s (%d ops) is NOT linearizable; see %s", k, len(ops), path))
		}
	}
	return problems, fmt.Sprintf("%s; %d writes with unknown outcome", strings.Join(parts, ", "), unknown)
}

// checkLedger checks the counter: the final value lies between what was
// acknowledged and that plus every increment whose outcome is unknown, and
// no two acknowledged increments claim the same range of values (which an
// increment applied twice, or answered from another's result, would do).
func checkLedger(h *history, final int64) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var problems []string
	if final < h.acked || final > h.acked+h.unknown {
		problems = append(problems, fmt.Sprintf("ledger: final %d outside [acknowledged %d, acknowledged + unknown %d]",
			final, h.acked, h.acked+h.unknown))
	}
	incrs := append([]incrRecord(nil), h.incrs...)
	sort.Slice(incrs, func(i, j int) bool { return incrs[i].value < incrs[j].value })
	var prev int64
	for _, r := range incrs {
		if r.value-r.delta < prev {
			problems = append(problems, fmt.Sprintf("ledger: increment of %d answered %d overlaps an earlier one ending at %d", r.delta, r.value, prev))
			break
		}
		if r.value > final {
			problems = append(problems, fmt.Sprintf("ledger: increment answered %d, above the final value %d", r.value, final))
			break
		}
		prev = r.value
	}
	return problems
}

// maxGap returns the longest time within [from, to] without a successful
// call, given the completion times in order. The window's ends count as
// successes: a gap is measured from the fault (not from the last success
// before it) and is cut at the next fault, which gets what follows.
func maxGap(succ []time.Time, from, to time.Time) time.Duration {
	i := sort.Search(len(succ), func(i int) bool { return succ[i].After(from) })
	prev := from
	var longest time.Duration
	for ; i < len(succ) && succ[i].Before(to); i++ {
		longest = max(longest, succ[i].Sub(prev))
		prev = succ[i]
	}
	return max(longest, to.Sub(prev))
}

// errSummary lists the errors returned to callers, at most limit of them.
func errSummary(errs []clientErr, start time.Time, limit int) string {
	var b strings.Builder
	for i, e := range errs {
		if i == limit {
			fmt.Fprintf(&b, "\n  ... and %d more", len(errs)-limit)
			break
		}
		fmt.Fprintf(&b, "\n  %s (+%.1fs) session %d %s: %v", e.at.Format(tsFormat), e.at.Sub(start).Seconds(), e.session, e.what, e.err)
	}
	return b.String()
}

// outDir is where a failing run leaves its evidence.
func outDir(prefix string) string {
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return os.TempDir()
	}
	return d
}
