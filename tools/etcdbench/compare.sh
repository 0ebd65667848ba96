#!/usr/bin/env bash
# compare.sh: zraft and etcd 3.4 on this machine, with one load loop.
#
# Starts three etcd processes (Debian's etcd-server 3.4; fsync on, its
# defaults) and three `cmd/node` processes (on disk), one system at a time,
# and runs the same three workloads against each with the same loop
# (bench.RunOp): writes 64 sessions × 8 in flight, linearizable reads 8 × 8,
# writes 1 × 1. Repeats REPEATS times (default 3), alternating which system
# goes first, and prints the median throughput and p50 of each workload and
# the zraft/etcd ratios.
#
#   apt-get install -y etcd-server   # once
#   tools/etcdbench/compare.sh       # DURATION=10s REPEATS=3 by default
#
# Ports used: 2379-2381/2479-2481 (etcd client/peer), 7111-7113/7211-7213
# (zraft client/raft), all on 127.0.0.1. Every process it starts is killed
# on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
DURATION=${DURATION:-10s}
REPEATS=${REPEATS:-3}
work=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

command -v etcd >/dev/null || { echo "compare.sh: etcd not found (apt-get install etcd-server)" >&2; exit 1; }
(cd "$root" && go build -o "$work/node" ./cmd/node && go build -o "$work/zraft" ./cmd/zraft)
(cd "$here" && go build -o "$work/etcdbench" .)

etcd_eps=127.0.0.1:2379,127.0.0.1:2380,127.0.0.1:2381
zraft_eps=127.0.0.1:7111,127.0.0.1:7112,127.0.0.1:7113

start_etcd() {
	local cluster="e1=http://127.0.0.1:2479,e2=http://127.0.0.1:2480,e3=http://127.0.0.1:2481"
	for i in 1 2 3; do
		local cp=$((2378 + i)) pp=$((2478 + i))
		etcd --name "e$i" --data-dir "$work/etcd$i" \
			--listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
			--listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
			--initial-cluster "$cluster" --initial-cluster-state new --log-level error \
			>"$work/etcd$i.log" 2>&1 &
		pids+=($!)
	done
	for _ in $(seq 100); do
		ETCDCTL_API=3 etcdctl --endpoints "$etcd_eps" endpoint health >/dev/null 2>&1 && return
		sleep 0.2
	done
	echo "compare.sh: etcd did not start" >&2; exit 1
}

start_zraft() {
	local members="1=127.0.0.1:7211/127.0.0.1:7111,2=127.0.0.1:7212/127.0.0.1:7112,3=127.0.0.1:7213/127.0.0.1:7113"
	local cid
	cid=$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
	for i in 1 2 3; do
		"$work/node" --id "$i" --members "$members" --cluster-id "$cid" --data "$work/zraft$i" \
			--log-level warn >"$work/zraft$i.log" 2>&1 &
		pids+=($!)
	done
	for _ in $(seq 100); do
		"$work/zraft" --endpoints "$zraft_eps" --timeout 2s kv set compare-probe x >/dev/null 2>&1 && return
		sleep 0.2
	done
	echo "compare.sh: zraft did not start:" >&2; tail -5 "$work"/zraft1.log >&2; exit 1
}

stop_all() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
	rm -rf "$work"/etcd? "$work"/zraft?
}

# workload NAME FLAGS...
workloads=("w64x8:--sessions 64 --inflight 8" "r8x8:--sessions 8 --inflight 8 --read-ratio 1" "w1x1:--sessions 1 --inflight 1")

run_system() { # run_system etcd|zraft REPEAT
	local sys=$1 rep=$2
	"start_$sys"
	for w in "${workloads[@]}"; do
		local name=${w%%:*} flags=${w#*:}
		# shellcheck disable=SC2086
		if [ "$sys" = etcd ]; then
			"$work/etcdbench" --endpoints "$etcd_eps" $flags --duration "$DURATION" --json 2>>"$work/bench.log"
		else
			"$work/zraft" --endpoints "$zraft_eps" bench $flags --duration "$DURATION" --json --quiet 2>>"$work/bench.log"
		fi >"$work/$sys-$name-$rep.json"
	done
	stop_all
}

for rep in $(seq "$REPEATS"); do
	if [ $((rep % 2)) -eq 1 ]; then order="zraft etcd"; else order="etcd zraft"; fi
	for sys in $order; do
		echo "run $rep/$REPEATS: $sys" >&2
		run_system "$sys" "$rep"
	done
done

python3 - "$work" "$REPEATS" <<'PY'
import json, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
def load(sys_, w, r):
    d = json.load(open(f"{work}/{sys_}-{w}-{r}.json"))
    res = d["results"][0]
    return res["throughput_ops_per_sec"], res["p50_us"] / 1000
print(f"{'workload':10} {'zraft ops/s':>12} {'etcd ops/s':>12} {'ratio':>7} {'zraft p50':>10} {'etcd p50':>9}   (medians of {reps})")
for w in ("w64x8", "r8x8", "w1x1"):
    z = [load("zraft", w, r) for r in range(1, reps + 1)]
    e = [load("etcd", w, r) for r in range(1, reps + 1)]
    ratios = [a[0] / b[0] for a, b in zip(z, e) if b[0] > 0]
    print(f"{w:10} {statistics.median(x[0] for x in z):12.0f} {statistics.median(x[0] for x in e):12.0f} "
          f"{statistics.median(ratios):6.2f}x {statistics.median(x[1] for x in z):9.2f}ms {statistics.median(x[1] for x in e):8.2f}ms")
PY
