# Runs overlaybd-conformance with --frontend tcmu once per line of
# /mnt/conformance-runs.txt (each line: the filter flags of one run). Run i
# writes its table to /mnt/conformance-i.txt, its log to
# /mnt/conformance-i.log, its JSON report to /mnt/conformance-i.json and its
# exit status to /mnt/conformance-i.rc. Then conformance/matrix's kernel
# tests (/mnt/bin/matrix.test, when present) run, their output in
# /mnt/matrix-test.log. The script fails when a run or the tests do.
mkdir -p /opt/bin
cp /mnt/bin/* /opt/bin/ || { echo "FAIL: copy the binaries"; exit 1; }
cd /tmp
# The registry of the remote cells listens on 127.0.0.1 inside the
# conformance process: no network card, only the loopback.
ip link set lo up || { echo "FAIL: loopback"; exit 1; }
# The run's registry keeps its blobs in memory: keep the heap inside the
# guest's memory.
export GOMEMLIMIT=${GOMEMLIMIT:-$(($(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 2))KiB}
rc=0
i=0
while read -r line; do
	[ -n "$line" ] || continue
	i=$((i + 1))
	echo "== conformance run $i: $line"
	start=$(date +%s)
	# shellcheck disable=SC2086 # the line holds the flags of one run
	/opt/bin/overlaybd-conformance --frontend tcmu $line --plugin-lz4 /opt/bin/lz4-cgo --plugin-zstd /opt/bin/zstd-cgo \
		--report /mnt/conformance-$i.json >/mnt/conformance-$i.txt 2>/mnt/conformance-$i.log
	r=$?
	echo $r >/mnt/conformance-$i.rc
	echo "== run $i exited with $r in $(($(date +%s) - start))s"
	grep -E '^(pass|fail) ' /mnt/conformance-$i.log
	grep -E '^FAIL ' /mnt/conformance-$i.log
	[ $r = 0 ] || rc=1
done </mnt/conformance-runs.txt
[ $i -gt 0 ] || { echo "FAIL: no runs"; exit 1; }
if [ -x /opt/bin/matrix.test ]; then
	# conformance/matrix's kernel tests: broken implementations are
	# caught through the disk, the control passes.
	echo "== conformance/matrix kernel tests"
	start=$(date +%s)
	/opt/bin/matrix.test -test.run '^TestTCMU' -test.v -test.timeout 600s >/mnt/matrix-test.log 2>&1
	r=$?
	echo $r >/mnt/matrix-test.rc
	echo "== matrix.test exited with $r in $(($(date +%s) - start))s"
	grep -E -e '--- (PASS|FAIL)|caught:' /mnt/matrix-test.log
	[ $r = 0 ] || rc=1
fi
exit $rc
