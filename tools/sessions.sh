#!/usr/bin/env bash
# sessions.sh: keep-alive-only sessions against three cmd/node processes on
# disk (issue 12's memory, keep-alive latency and CPU rows).
#
# For each session count in SESSIONS (default "1000 10000 15000") it starts
# a fresh 3-member cluster, runs `zraft bench --keepalive --sessions N`
# (one connection per session, one keep-alive per interval, spread evenly)
# for DURATION (default 30s), reads the leader's RSS, Go heap and CPU from
# its /metrics, stops the cluster, and repeats REPEATS times (default 3).
# It prints every run and the medians per session count.
#
#   tools/sessions.sh                       # SESSIONS="1000 10000 15000" REPEATS=3
#   SESSIONS=15000 REPEATS=1 tools/sessions.sh
#   KEEP=1 tools/sessions.sh                # keep the work dir (logs, JSON)
#   FAST_PATH=0 tools/sessions.sh           # keepalive_fast_path off (default on)
#   POLLER=0 tools/sessions.sh              # client_poller off (default on)
#   PROFILE=1 KEEP=1 tools/sessions.sh      # also a 15 s CPU profile and a heap
#                                           # profile of the leader per run
#
# Open files are capped at 20,000 per process here: the script raises its
# own limit to 20,000, and 15,000 sessions is the most it can show with one
# connection per session. Ports used: 17101-17103 (clients), 17201-17203
# (Raft), 17301-17303 (HTTP), all on 127.0.0.1. Every process it starts is
# killed on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
SESSIONS=${SESSIONS:-"1000 10000 15000"}
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-30s}
OPEN_RATE=${OPEN_RATE:-1500}
ulimit -n 20000
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
(cd "$root" && go build -o "$work/node" ./cmd/node && go build -o "$work/zraft" ./cmd/zraft)

eps=127.0.0.1:17101,127.0.0.1:17102,127.0.0.1:17103
metrics=http://127.0.0.1:17301/metrics,http://127.0.0.1:17302/metrics,http://127.0.0.1:17303/metrics
members="1=127.0.0.1:17201/127.0.0.1:17101,2=127.0.0.1:17202/127.0.0.1:17102,3=127.0.0.1:17203/127.0.0.1:17103"
# The limits a test of 15k sessions from one host needs: connections and
# sessions per source above the defaults, handshakes because the generator
# opens many at once, and a creation rate that opens 15k in seconds.
echo "sessions-bench-token" >"$work/token"
cat >"$work/limits.json" <<'JSON'
{"max_conns": 19000, "max_conns_per_source": 19000, "max_sessions": 100000,
 "max_sessions_per_source": 19000, "max_handshakes": 1024,
 "max_handshakes_per_source": 1024, "session_create_rate": 2000}
JSON
# FAST_PATH and POLLER set the node options explicitly (1: on, 0: off);
# unset, the node's defaults apply.
onoff() { if [ "$1" = 0 ]; then echo false; else echo true; fi; }
if [ -n "${FAST_PATH:-}" ]; then
	sed -i "s/^{/{\"keepalive_fast_path\": $(onoff "$FAST_PATH"), /" "$work/limits.json"
fi
if [ -n "${POLLER:-}" ]; then
	sed -i "s/^{/{\"client_poller\": $(onoff "$POLLER"), /" "$work/limits.json"
fi

start() {
	local cid
	cid=$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
	for i in 1 2 3; do
		"$work/node" --config "$work/limits.json" --id "$i" --members "$members" --cluster-id "$cid" \
			--data "$work/data$i" --http "127.0.0.1:$((17300 + i))" --log-level warn \
			--pprof --admin-token-file "$work/token" >>"$work/node$i.log" 2>&1 &
		pids+=($!)
	done
	for _ in $(seq 100); do
		"$work/zraft" --endpoints "$eps" --timeout 2s kv set sessions-probe x >/dev/null 2>&1 && return
		sleep 0.2
	done
	echo "sessions.sh: cluster did not start:" >&2; tail -5 "$work"/node1.log >&2; exit 1
}

stop() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
	rm -rf "$work"/data?
}

# profile N REP: once the sessions are open, a CPU and a heap profile of
# whichever member leads.
profile() {
	sleep $(($1 / OPEN_RATE + 8))
	for i in 1 2 3; do
		if curl -fs "http://127.0.0.1:$((17300 + i))/metrics" | grep -q '^zraft_is_leader 1'; then
			curl -fs -H "Authorization: Bearer sessions-bench-token" \
				"http://127.0.0.1:$((17300 + i))/debug/pprof/profile?seconds=15" >"$work/cpu-$1-$2.prof" || true
			curl -fs -H "Authorization: Bearer sessions-bench-token" \
				"http://127.0.0.1:$((17300 + i))/debug/pprof/heap" >"$work/heap-$1-$2.prof" || true
		fi
	done
}

for n in $SESSIONS; do
	for rep in $(seq "$REPEATS"); do
		echo "sessions.sh: $n sessions, run $rep/$REPEATS" >&2
		start
		prof=
		if [ -n "${PROFILE:-}" ]; then
			profile "$n" "$rep" &
			prof=$!
		fi
		"$work/zraft" --endpoints "$eps" bench --keepalive --sessions "$n" --duration "$DURATION" \
			--open-rate "$OPEN_RATE" --metrics-urls "$metrics" --json --quiet >"$work/ka-$n-$rep.json" 2>>"$work/bench.log"
		[ -z "$prof" ] || wait "$prof"
		stop
	done
done

python3 - "$work" "$REPEATS" "$SESSIONS" <<'PY'
import json, statistics, sys
work, reps, counts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
def load(n, r):
    d = json.load(open(f"{work}/ka-{n}-{r}.json"))
    return d[0] if isinstance(d, list) else d
cols = [("sent", "sent", 1), ("unanswered", "unanswered", 1), ("p50_ns", "p50 ms", 1e6), ("p99_ns", "p99 ms", 1e6),
        ("leader_rss_after", "RSS MB", 1e6), ("bytes_per_session", "RSS/sess KB", 1e3),
        ("heap_bytes_per_session", "heap/sess KB", 1e3), ("leader_cpu_percent", "CPU %", 1)]
print("sessions run " + " ".join(f"{c[1]:>12}" for c in cols))
for n in counts:
    rows = [load(n, r) for r in range(1, reps + 1)]
    for r, row in enumerate(rows, 1):
        print(f"{n:>8} {r:>3} " + " ".join(f"{row.get(k, 0) / s:12.2f}" for k, _, s in cols))
    print(f"{n:>8} med " + " ".join(f"{statistics.median(row.get(k, 0) for row in rows) / s:12.2f}" for k, _, s in cols))
PY
[ -z "${KEEP:-}" ] || echo "sessions.sh: kept $work" >&2
