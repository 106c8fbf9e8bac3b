#!/usr/bin/env bash
# Benchmarks the IO engines against fio with the same engine, queue depth,
# block size, direct flag and file, in the same run, interleaved, and
# prints medians and ratios (our IOPS / fio's IOPS) as a markdown table.
#
#   bench/engines/run.sh            # defaults below
#   REPS=5 RUNTIME=5 SIZE_MB=1024 FILE=/var/tmp/x.dat bench/engines/run.sh
#   CASES=cached ENGINES="psync io_uring" bench/engines/run.sh
#
# Cases: 4 KiB random reads O_DIRECT at depth 1 and 32 (fio psync gets
# numjobs=32 against 32 goroutines of ours), 1 MiB sequential reads O_DIRECT
# at depth 1, and buffered page-cache-hit 4 KiB random reads at depth 1
# (compared with our psync, fio psync given for reference), and buffered
# 4 KiB random writes at depth 1 (the writable layer's pattern; likewise).
# The file must be on a filesystem that accepts O_DIRECT (not tmpfs on old
# kernels, not ramfs). Raw results go to $OUT (JSON lines).
set -euo pipefail
cd "$(dirname "$0")/../.."

REPS=${REPS:-3}
RUNTIME=${RUNTIME:-3}
SIZE_MB=${SIZE_MB:-512}
FILE=${FILE:-/var/tmp/overlaybd-engines-bench.dat}
OUT=${OUT:-bench-engines.jsonl}
ENGINES=${ENGINES:-"psync libaio io_uring posixaio"}
CASES=${CASES:-"direct cached"} # which groups of cases to run

command -v fio >/dev/null || { echo "fio is not installed (apt-get install -y fio)" >&2; exit 1; }
BIN=$(mktemp -d)
trap 'rm -rf "$BIN"' EXIT
go build -o "$BIN/enginebench" ./bench/engines/enginebench

if [ "$(stat -c %s "$FILE" 2>/dev/null || echo 0)" -ne $((SIZE_MB << 20)) ]; then
	echo "creating $FILE ($SIZE_MB MiB)" >&2
	head -c $((SIZE_MB << 20)) /dev/urandom >"$FILE"
fi
: >"$OUT"

# fio_run CASE ENGINE RW BS DEPTH DIRECT: one fio run, one JSON line.
fio_run() {
	local case=$1 eng=$2 rw=$3 bs=$4 depth=$5 direct=$6 jobs=1 iodepth=$5
	if [ "$eng" = psync ]; then jobs=$depth iodepth=1; fi
	fio --name=bench --filename="$FILE" --rw="$rw" --bs="$bs" --direct="$direct" --ioengine="$eng" \
		--iodepth="$iodepth" --numjobs="$jobs" --runtime="$RUNTIME" --time_based --group_reporting \
		--norandommap --randrepeat=0 --invalidate=0 --output-format=json 2>/dev/null |
		python3 -c 'import json,sys; d=json.load(sys.stdin); j=d["jobs"][0]; n=j["read"]["total_ios"]+j["write"]["total_ios"]; print(json.dumps({"case":sys.argv[1],"impl":"fio","engine":sys.argv[2],"iops":j["read"]["iops"]+j["write"]["iops"],"cpu_us_per_op":(j["usr_cpu"]+j["sys_cpu"])/100*j["elapsed"]*1e6*int(sys.argv[3])/max(n,1)}))' "$case" "$eng" "$jobs" >>"$OUT"
}

# ours_run CASE ENGINE RW BS DEPTH DIRECT [MODE]
ours_run() {
	local case=$1 eng=$2 rw=$3 bs=$4 depth=$5 direct=$6 mode=${7:-goroutines}
	local d=false
	[ "$direct" = 1 ] && d=true
	"$BIN/enginebench" -engine "$eng" -file "$FILE" -rw "$rw" -bs "$bs" -depth "$depth" -direct="$d" \
		-mode "$mode" -queue $((depth > 16 ? depth : 16)) -runtime "${RUNTIME}s" |
		python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["case"]=sys.argv[1]; d["impl"]="ours-"+sys.argv[2]; print(json.dumps(d))' "$case" "$mode" >>"$OUT"
}

fioeng() { [ "$1" = io_uring ] && echo io_uring || echo "$1"; }

for rep in $(seq "$REPS"); do
	echo "repetition $rep/$REPS" >&2
	[[ " $CASES " == *" direct "* ]] && for spec in "randread-4k-qd1-direct randread 4k 1 1" "randread-4k-qd32-direct randread 4k 32 1" \
		"read-1m-qd1-direct read 1m 1 1"; do
		set -- $spec
		for eng in $ENGINES; do
			if [ $((rep % 2)) = 1 ]; then
				fio_run "$1" "$(fioeng "$eng")" "$2" "$3" "$4" "$5"
				ours_run "$1" "$eng" "$2" "$(numfmt --from=iec "${3^^}")" "$4" "$5"
			else
				ours_run "$1" "$eng" "$2" "$(numfmt --from=iec "${3^^}")" "$4" "$5"
				fio_run "$1" "$(fioeng "$eng")" "$2" "$3" "$4" "$5"
			fi
			if [ "$4" = 32 ] && [ "$eng" != psync ] && [ "$eng" != posixaio ]; then
				ours_run "$1" "$eng" "$2" 4096 32 1 batch
			fi
		done
	done
	[[ " $CASES " == *" cached "* ]] || continue
	cat "$FILE" >/dev/null # page-cache hits from here on
	for eng in $ENGINES; do
		ours_run randread-4k-qd1-cached "$eng" randread 4096 1 0
	done
	fio_run randread-4k-qd1-cached psync randread 4k 1 0 # fio keeps the cache: --invalidate=0
	# Buffered 4 KiB random writes, as the writable layer does them.
	for eng in $ENGINES; do
		ours_run randwrite-4k-qd1-buffered "$eng" randwrite 4096 1 0
	done
	fio_run randwrite-4k-qd1-buffered psync randwrite 4k 1 0
done

python3 bench/engines/summary.py "$OUT"
