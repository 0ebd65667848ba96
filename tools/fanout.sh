#!/usr/bin/env bash
# fanout.sh: the kv watch fan-out workload (issue 12) REPEATS times
# (default 3), each on a fresh 3-node cluster on disk, and the medians.
#
# Each run is `go test -run '^$' -bench FanOut -benchtime 1x ./bench/` for
# WATCHERS (default "0,10,100,1000") watchers of one hot key, with 8×8
# writes on other keys beside it; the ratio of the other keys' write rate
# to the rate without watchers is taken within each run.
#
#   tools/fanout.sh                      # DURATION=5s REPEATS=3
#   WATCHERS=0,1000 REPEATS=5 tools/fanout.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-5s}
WATCHERS=${WATCHERS:-0,10,100,1000}
work=$(mktemp -d)
failed=
trap '[ -n "$failed" ] || [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
for rep in $(seq "$REPEATS"); do
	echo "fanout.sh: run $rep/$REPEATS" >&2
	if ! (cd "$root" && go test -run '^$' -bench FanOut -benchtime 1x ./bench/ \
		-args -compare.duration="$DURATION" -fanout.watchers "$WATCHERS") >"$work/run-$rep.txt" 2>&1; then
		failed=1
		echo "fanout.sh: run $rep failed; its output is kept in $work/run-$rep.txt:" >&2
		tail -5 "$work/run-$rep.txt" >&2
	fi
done
python3 - "$work" "$REPEATS" <<'PY'
import re, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
# The table row: watchers, other ops/s, p50, p99, hot writes/s, notifications/s, resyncs, ...
row = re.compile(r"^\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)")
runs = []
for r in range(1, reps + 1):
    got = {}
    for line in open(f"{work}/run-{r}.txt"):
        m = row.match(line)
        if m:
            w, other, p50, p99, hot, notif, resync = m.groups()
            got[int(w)] = dict(other=float(other), p50=float(p50), hot=float(hot), notif=float(notif), resync=float(resync))
    if 0 in got:
        for w in got:
            got[w]["ratio"] = got[w]["other"] / got[0]["other"] if got[0]["other"] else 0
    runs.append(got)
    print(f"run {r}: " + "; ".join(f"{w} watchers: other {v['other']:.0f}/s ({v.get('ratio', 0):.2f}x), hot {v['hot']:.0f}/s, notifications {v['notif']:.0f}/s" for w, v in sorted(got.items())))
print(f"\nmedians of {reps}:")
print(f"{'watchers':>8} {'other/s':>8} {'ratio':>6} {'other p50 ms':>12} {'hot/s':>6} {'notif/s':>8} {'resyncs':>8}")
for w in sorted({w for g in runs for w in g}):
    vals = [g[w] for g in runs if w in g]
    med = lambda k: statistics.median(v.get(k, 0) for v in vals)
    print(f"{w:>8} {med('other'):8.0f} {med('ratio'):5.2f}x {med('p50'):12.2f} {med('hot'):6.0f} {med('notif'):8.0f} {med('resync'):8.0f}")
PY
