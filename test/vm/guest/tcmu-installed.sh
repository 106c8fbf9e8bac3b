# The installed overlaybd-tcmu (make install's layout, copied into the
# guest's root) started from the installed unit's ExecStart with the
# installed /etc/overlaybd/overlaybd.json, as systemd would, serves a device.
LIB_NOINIT=1 . /mnt/lib.sh
WATCHDOG=150
(sleep $WATCHDOG && echo "watchdog: the guest script is taking too long" && dump) &
cp /mnt/ca.pem /etc/ssl/certs/ca-certificates.crt 2>/dev/null || { mkdir -p /etc/ssl/certs && cp /mnt/ca.pem /etc/ssl/certs/ca-certificates.crt; }

step "install the tree"
cp -a /mnt/root/. / || fail "copy the installed tree"
mkdir -p /var/log
UNIT=/lib/systemd/system/overlaybd-tcmu.service
[ -f $UNIT ] || fail "no installed unit $UNIT"
PRE=$(sed -n 's/^ExecStartPre=//p' $UNIT)
START=$(sed -n 's/^ExecStart=//p' $UNIT)
[ -n "$START" ] || fail "no ExecStart in $UNIT"
echo "ExecStartPre: $PRE"
echo "ExecStart: $START"
DLOG=$(sed -n 's/.*"logPath": *"\([^"]*\)".*/\1/p' /etc/overlaybd/overlaybd.json)
[ -n "$DLOG" ] || fail "no logPath in the installed config"

step "start the daemon from the unit's command lines"
# init has loaded target_core_user already; busybox modprobe without a
# modules.dep may still fail, which is fine only when the module is there.
$PRE || [ -d /sys/module/target_core_user ] || fail "ExecStartPre failed and target_core_user is not loaded"
$START 2>>/mnt/daemon.stderr &
DPID=$!
wait_for 30 sh -c "! kill -0 $DPID || grep -q 'serving TCMU devices' $DLOG"
kill -0 $DPID || fail "the installed daemon exited at start"
grep -q 'serving TCMU devices' $DLOG || fail "the installed daemon is not ready"
grep -q "config=$(sed -n 's/^ExecStart=[^ ]* //p' $UNIT)" $DLOG || fail "the daemon did not take the config the unit names"

step "attach a device and read its file system"
sd=$(attach 7 "/mnt/img/config.v1.json;7") || fail "attach failed"
[ "$(cat /mnt/img/result)" = success ] || fail "result file: $(cat /mnt/img/result)"
[ "$(cat /sys/block/$sd/ro)" = 1 ] || fail "read-only image attached writable"
mkdir -p /tmp/m
mount -t ext4 -o ro,noload /dev/$sd /tmp/m || fail "mount"
(cd /tmp/m && sha256sum -c /mnt/expect.sha256) || fail "contents"
umount /tmp/m || fail "umount"

step "teardown and stop as systemd does (SIGTERM to the main process)"
detach 7 || fail "detach"
kill -TERM $DPID
wait_for 60 sh -c "! kill -0 $DPID" || fail "daemon did not stop on SIGTERM"
wait $DPID
rc=$?
cp $DLOG /mnt/installed.log
[ $rc = 0 ] || fail "daemon exited with $rc"
grep -q "device closed" $DLOG || fail "the daemon did not close the device"
echo "tcmu-installed: ok"
