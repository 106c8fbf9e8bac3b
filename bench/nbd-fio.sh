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
# IOPS and MiB/s of each and the ratio to nbdkit's median.
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

run_fio() { # uri rw bs depth
	fio --name=b --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" \
		--runtime="$runtime" --time_based --ramp_time=1 --output-format=json --output="$work/fio.json" >/dev/null 2>&1
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["jobs"][0]["read"]; print("%.0f %.1f" % (r["iops"], r["bw_bytes"]/1048576))' "$work/fio.json"
}

servers=("nbdkit file (raw)|nbd+unix:///?socket=$work/nbdkit.sock"
	"overlaybd-nbd plain|nbd+unix:///plain?socket=$work/obd.sock"
	"overlaybd-nbd lz4 zfile|nbd+unix:///lz4?socket=$work/obd.sock")
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

printf '%-24s %-24s %10s %10s %8s\n' workload server IOPS MiB/s ratio
for w in "randread 4k 16" "read 1m 4"; do
	set -- $w
	rm -f "$work"/res.*
	for _ in $(seq 1 "$rounds"); do
		for i in "${!servers[@]}"; do
			run_fio "${servers[$i]#*|}" "$1" "$2" "$3" >>"$work/res.$i"
		done
	done
	base=""
	for i in "${!servers[@]}"; do
		iops=$(cut -d' ' -f1 "$work/res.$i" | median)
		mibs=$(cut -d' ' -f2 "$work/res.$i" | median)
		[ -z "$base" ] && base=$iops
		ratio=$(python3 -c "print('%.2fx' % ($iops / $base))")
		printf '%-24s %-24s %10.0f %10.1f %8s\n' "$1 bs=$2 qd=$3" "${servers[$i]%%|*}" "$iops" "$mibs" "$ratio"
	done
done
