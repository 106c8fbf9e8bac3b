#!/usr/bin/env bash
# Benchmarks overlaybd-nbd against nbdkit's file plugin with fio's nbd
# engine, both on unix sockets, in the same run:
#
#   * the same data as a raw file served by `nbdkit file`,
#   * a committed layer of it (overlaybd-import) served by overlaybd-nbd,
#   * an lz4 ZFile of that layer (overlaybd-import -z) served by overlaybd-nbd.
#
# Workloads: 4 KiB random reads at depth 16, and 1 MiB sequential reads at
# depth 4. The servers take turns, ROUNDS times (default 3), so that the
# noise of a shared machine hits them alike; the table gives the median
# IOPS and MiB/s of each and the ratio to nbdkit's median, and the server's
# CPU time per IO (user+system of the server process during the run, from
# /proc: steadier than throughput on a busy machine; lower is better).
#
#   bench/nbd-fio.sh [SIZE_MIB (default 256)] [RUNTIME_S per run (default 5)]
#
# Needs: make build, fio, nbdkit, python3. BIN overrides the binaries' folder.
set -euo pipefail
size_mib=${1:-256}
runtime=${2:-5}
rounds=${ROUNDS:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$root/bin}
for t in fio nbdkit python3; do command -v $t >/dev/null || { echo "bench: $t missing" >&2; exit 1; }; done
for t in overlaybd-import overlaybd-nbd; do [ -x "$BIN/$t" ] || { echo "bench: $BIN/$t missing: make build" >&2; exit 1; }; done

work=$(mktemp -d /tmp/overlaybd-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# Half-compressible data: random blocks interleaved with text-like blocks.
python3 - "$work/data.raw" "$size_mib" <<'EOF'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
words = b"overlaybd block device layer zfile lsmt index data registry cache "
text = (words * (65536 // len(words) + 1))[:65536]
with open(path, "wb") as f:
    for i in range(mib * 16):
        f.write(os.urandom(65536) if i % 2 else text)
EOF
"$BIN/overlaybd-import" "$work/data.raw" "$work/plain.commit" >/dev/null
"$BIN/overlaybd-import" -z "$work/data.raw" "$work/lz4.zcommit" >/dev/null
printf '{"lowers":[{"file":"%s"}]}' "$work/plain.commit" >"$work/plain.json"
printf '{"lowers":[{"file":"%s"}]}' "$work/lz4.zcommit" >"$work/lz4.json"
printf '{"logPath":"","enableAudit":false}' >"$work/obd.json"

nbdkit -f -U "$work/nbdkit.sock" file "$work/data.raw" &
pids+=($!)
"$BIN/overlaybd-nbd" --service_config_path "$work/obd.json" --unix "$work/obd.sock" \
	plain="$work/plain.json" lz4="$work/lz4.json" 2>"$work/obd.log" &
pids+=($!)
for s in nbdkit.sock obd.sock; do
	for _ in $(seq 1 100); do [ -S "$work/$s" ] && break; sleep 0.1; done
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run_fio() { # pid uri rw bs depth -> IOPS MiB/s server-CPU-µs-per-IO
	local before after
	before=$(cpu_ticks "$1")
	fio --name=b --ioengine=nbd --uri="$2" --rw="$3" --bs="$4" --iodepth="$5" \
		--runtime="$runtime" --time_based --output-format=json --output="$work/fio.json" >/dev/null 2>&1
	after=$(cpu_ticks "$1")
	python3 -c 'import json,sys,os
r=json.load(open(sys.argv[1]))["jobs"][0]["read"]
ticks=(int(sys.argv[3])-int(sys.argv[2]))/os.sysconf("SC_CLK_TCK")
print("%.0f %.1f %.1f" % (r["iops"], r["bw_bytes"]/1048576, 1e6*ticks/max(r["total_ios"],1)))' "$work/fio.json" "$before" "$after"
}

# name|pid|uri
servers=("nbdkit file (raw)|${pids[0]}|nbd+unix:///?socket=$work/nbdkit.sock"
	"overlaybd-nbd plain|${pids[1]}|nbd+unix:///plain?socket=$work/obd.sock"
	"overlaybd-nbd lz4 zfile|${pids[1]}|nbd+unix:///lz4?socket=$work/obd.sock")
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-24s %-24s %9s %9s %7s %12s %7s\n' workload server IOPS MiB/s ratio "CPU µs/IO" ratio
for w in "randread 4k 16" "read 1m 4"; do
	set -- $w
	rm -f "$work"/res.*
	for _ in $(seq 1 "$rounds"); do
		for i in "${!servers[@]}"; do
			IFS='|' read -r _ pid uri <<<"${servers[$i]}"
			run_fio "$pid" "$uri" "$1" "$2" "$3" >>"$work/res.$i"
		done
	done
	base="" cbase=""
	for i in "${!servers[@]}"; do
		iops=$(cut -d' ' -f1 "$work/res.$i" | median)
		mibs=$(cut -d' ' -f2 "$work/res.$i" | median)
		cpu=$(cut -d' ' -f3 "$work/res.$i" | median)
		[ -z "$base" ] && base=$iops cbase=$cpu
		ratio=$(python3 -c "print('%.2fx' % ($iops / $base))")
		cratio=$(python3 -c "print('%.2fx' % ($cpu / $cbase if $cbase else 0))")
		printf '%-24s %-24s %9.0f %9.1f %7s %12.1f %7s\n' "$1 bs=$2 qd=$3" "${servers[$i]%%|*}" "$iops" "$mibs" "$ratio" "$cpu" "$cratio"
	done
done
