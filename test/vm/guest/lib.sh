# Shared functions of the guest scripts (busybox sh). Sourced, not run.
CORE=/sys/kernel/config/target/core
LOOP=/sys/kernel/config/target/loopback
HBA=user_999999999
DLOG=/mnt/overlaybd.log

fail() {
	echo "FAIL: $*"
	echo "--- daemon log (tail)"
	tail -n 60 $DLOG 2>/dev/null
	tail -n 20 /mnt/daemon.stderr 2>/dev/null
	exit 1
}
step() { echo "== $*"; }

# wait_for SECONDS CMD...: retry CMD every 0.1 s until it succeeds.
wait_for() {
	n=$(($1 * 10))
	shift
	while [ $n -gt 0 ]; do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
		n=$((n - 1))
	done
	return 1
}

# start_daemon: run overlaybd-tcmu with /mnt/overlaybd.json (positional
# argument, as upstream's unit passes it) and wait until it serves.
start_daemon() {
	mark=$(cat $DLOG 2>/dev/null | wc -l)
	/opt/bin/overlaybd-tcmu /mnt/overlaybd.json 2>>/mnt/daemon.stderr &
	DPID=$!
	wait_for 30 sh -c "! kill -0 $DPID || tail -n +$((mark + 1)) $DLOG | grep -q 'serving TCMU devices'"
	kill -0 $DPID || fail "daemon exited at start"
	tail -n +$((mark + 1)) $DLOG | grep -q 'serving TCMU devices' || fail "daemon not ready"
}

stop_daemon() {
	kill -TERM $DPID
	wait_for 60 sh -c "! kill -0 $DPID" || fail "daemon did not stop on SIGTERM"
	wait $DPID
	rc=$?
	[ $rc = 0 ] || fail "daemon exited with $rc"
}

wwn_of() { printf 'naa.199%013d' "$1"; }

# attach ID CONFIG: replay the snapshotter's configfs sequence
# (accelerated-container-image pkg/snapshot/storage.go) and print the disk.
attach() {
	id=$1
	dev=$CORE/$HBA/dev_$id
	mkdir -p $dev || { echo "attach $id: mkdir $dev" >&2; return 1; }
	echo -n "dev_config=overlaybd/$2" >$dev/control || { echo "attach $id: dev_config" >&2; return 1; }
	echo -n "max_data_area_mb=4" >$dev/control || { echo "attach $id: max_data_area_mb" >&2; return 1; }
	if ! echo -n 1 >$dev/enable; then
		rmdir $dev
		return 2
	fi
	echo -n 2147483 >$dev/attrib/cmd_time_out || { echo "attach $id: cmd_time_out" >&2; return 1; }
	wwn=$(wwn_of $id)
	mkdir -p $LOOP/$wwn/tpgt_1/lun/lun_0 || { echo "attach $id: mkdir $wwn" >&2; return 1; }
	echo -n $wwn >$LOOP/$wwn/tpgt_1/nexus || { echo "attach $id: nexus" >&2; return 1; }
	ln -s $dev $LOOP/$wwn/tpgt_1/lun/lun_0/dev_$id || { echo "attach $id: LUN link" >&2; return 1; }
	addr=$(cat $LOOP/$wwn/tpgt_1/address)
	blk=/sys/class/scsi_device/$addr:0/device/block
	# The glob must be expanded on every try, not once when wait_for is
	# called: the disk may appear after the call.
	wait_for 60 sh -c "ls -d $blk/sd*" || { echo "attach $id: no disk under $blk" >&2; return 1; }
	sd=$(ls $blk | head -n 1)
	echo 2147483 >/sys/block/$sd/device/timeout
	wait_for 60 dd if=/dev/$sd of=/dev/null bs=512 count=1 || { echo "attach $id: $sd not readable" >&2; return 1; }
	echo $sd
}

# detach ID: tear down in the snapshotter's order.
detach() {
	id=$1
	wwn=$(wwn_of $id)
	rm $LOOP/$wwn/tpgt_1/lun/lun_0/dev_$id &&
		rmdir $LOOP/$wwn/tpgt_1/lun/lun_0 &&
		rmdir $LOOP/$wwn/tpgt_1 &&
		rmdir $LOOP/$wwn &&
		rmdir $CORE/$HBA/dev_$id
}

# zeros_only: succeed when standard input holds only zero bytes.
zeros_only() { [ "$(tr -d '\000' | wc -c)" = 0 ]; }

# dump: state for a post-mortem (processes, kernel stacks, the daemon's
# goroutines) into the share.
dump() {
	{
		echo "--- ps"
		ps
		for p in /proc/[0-9]*; do
			[ -r $p/stack ] || continue
			echo "--- $p $(cat $p/comm 2>/dev/null)"
			cat $p/stack 2>/dev/null
		done
	} >/mnt/dump.txt 2>&1
	dmesg >/mnt/dmesg.log 2>&1
	[ -n "${DPID:-}" ] && kill -QUIT $DPID 2>/dev/null
	echo "state dumped to dump.txt, dmesg.log, daemon.stderr"
}

# Scripts run by a guest script set LIB_NOINIT to get the functions alone.
if [ -z "${LIB_NOINIT:-}" ]; then
	# A watchdog dumps the state shortly before the harness gives up.
	(sleep "${WATCHDOG:-200}" && echo "watchdog: the guest script is taking too long" && dump) &
	WATCHDOG_PID=$!

	mkdir -p /opt/bin /etc/ssl/certs
	cp /mnt/bin/* /opt/bin/
	# The daemon's start-up checks want a CA bundle, as upstream's do.
	cp /mnt/ca.pem /etc/ssl/certs/ca-certificates.crt
fi
