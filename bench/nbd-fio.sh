#!/usr/bin/env bash
# Benchmarks overlaybd-nbd against nbdkit's file plugin with fio's nbd
# engine, both on unix sockets, in the same run:
#
#   * the same data as a raw file served by `nbdkit file`,
#   * a committed layer of it (overlaybd-import) served by overlaybd-nbd,
#   * an lz4 ZFile of that layer (overlaybd-import -z) served by overlaybd-nbd.
#
# Workloads: 4 KiB random reads at depth 16, and 1 MiB sequential reads at
# depth 4. Prints a table with IOPS, MiB/s and the ratio to nbdkit.
#
#   bench/nbd-fio.sh [SIZE_MIB (default 256)] [RUNTIME_S (default 10)]
#
# Needs: make build, fio, nbdkit, python3. BIN overrides the binaries' folder.
set -euo pipefail
size_mib=${1:-256}
runtime=${2:-10}
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

printf '%-30s %-22s %10s %10s %8s\n' workload server IOPS MiB/s ratio
for w in "randread 4k 16" "read 1m 4"; do
	set -- $w
	base=""
	for srv in "nbdkit file (raw)|nbd+unix:///?socket=$work/nbdkit.sock" \
		"overlaybd-nbd plain|nbd+unix:///plain?socket=$work/obd.sock" \
		"overlaybd-nbd lz4 zfile|nbd+unix:///lz4?socket=$work/obd.sock"; do
		name=${srv%%|*}
		uri=${srv#*|}
		read -r iops mibs < <(run_fio "$uri" "$1" "$2" "$3")
		[ -z "$base" ] && base=$iops
		ratio=$(python3 -c "print('%.2fx' % ($iops / $base))")
		printf '%-30s %-22s %10s %10s %8s\n' "$1 bs=$2 qd=$3" "$name" "$iops" "$mibs" "$ratio"
	done
done
