# overlaybd-tcmu with many devices: bad configurations fail their enable and
# get failed:<reason> in their result file while the daemon and the other
# devices carry on; 32 devices come up concurrently and serve IO; a killed
# daemon is restarted, re-attaches its devices and IO continues.
. /mnt/lib.sh
N=32
LOWER4M=$(cat /mnt/lower4m.sha256)

start_daemon

step "devices whose image cannot open"
for bad in missing corrupt badjson; do
	if attach 90$((${#bad})) "/mnt/img/$bad.json" >/tmp/attach.out 2>/tmp/attach.err; then
		fail "device with config $bad attached"
	fi
	grep -q "No such file or directory" /tmp/attach.err || fail "enable of $bad: $(cat /tmp/attach.err)"
	kill -0 $DPID || fail "daemon died on config $bad"
done
for bad in missing corrupt; do
	r=$(cat /mnt/img/$bad.result)
	case $r in failed:?*) echo "$bad: $r" ;; *) fail "result file of $bad: '$r'" ;; esac
done
[ ! -e /mnt/img/badjson.result ] || fail "result file written for an unparsable config"

step "$N devices concurrently"
# One process per device (xargs -P), each attaching its device, checking
# the lower layer's data through it and writing a pattern.
seq 0 $((N - 1)) | xargs -P $N -n 1 sh /mnt/many-one.sh || fail "some devices failed"
echo 3 >/proc/sys/vm/drop_caches
i=0
while [ $i -lt $N ]; do
	sd=$(cat /tmp/many.$i.sd)
	dd if=/dev/$sd bs=64k skip=$((200 + i * 16)) count=16 2>/dev/null | cmp -s - /tmp/pat.$i ||
		fail "device $i ($sd): written data does not read back"
	i=$((i + 1))
done
[ "$(ls /sys/class/uio | wc -l)" -ge $N ] || fail "fewer than $N UIO devices"

step "kill -9 the daemon, restart it: devices are re-attached and IO continues"
sd=$(cat /tmp/many.0.sd)
kill -9 $DPID
wait $DPID 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
# This read is queued while no daemon runs.
(dd if=/dev/$sd bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1 >/tmp/during.sha) &
RPID=$!
sleep 1
start_daemon
wait_for 60 sh -c "! kill -0 $RPID" || fail "read queued during the restart did not finish"
[ "$(cat /tmp/during.sha)" = "$LOWER4M" ] || fail "read across the restart returned wrong data"
grep -q "reopen=true" $DLOG || fail "no device re-attached"
i=0
while [ $i -lt $N ]; do
	sd=$(cat /tmp/many.$i.sd)
	echo 3 >/proc/sys/vm/drop_caches
	dd if=/dev/$sd bs=64k skip=$((200 + i * 16)) count=16 2>/dev/null | cmp -s - /tmp/pat.$i ||
		fail "device $i after the restart: data differs"
	dd if=/tmp/pat.$i of=/dev/$sd bs=64k seek=$((600 + i * 16)) conv=fsync 2>/dev/null || fail "device $i: write after the restart"
	i=$((i + 1))
done

step "teardown"
i=0
while [ $i -lt $N ]; do
	detach $((100 + i)) || fail "detach $i"
	i=$((i + 1))
done
stop_daemon
echo "tcmu-daemon-many: ok"
