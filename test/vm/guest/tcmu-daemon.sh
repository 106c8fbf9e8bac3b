# End to end: overlaybd-tcmu serves an ext4 image stack (a committed lower
# layer plus a writable upper) to the kernel as a SCSI disk.
. /mnt/lib.sh

start_daemon
step "attach device 1"
sd=$(attach 1 "/mnt/img/config.v1.json;1") || fail "attach failed"
echo "disk $sd"
[ "$(cat /mnt/img/result)" = success ] || fail "result file: $(cat /mnt/img/result)"
[ "$(cat /sys/block/$sd/ro)" = 0 ] || fail "writable image attached read-only"
[ "$(cat /sys/block/$sd/queue/discard_max_bytes)" != 0 ] || fail "no discard support"

step "mount and read the lower layer's files"
mkdir -p /tmp/m
mount -t ext4 /dev/$sd /tmp/m || fail "mount"
(cd /tmp/m && sha256sum -c /mnt/expect.sha256) || fail "contents of the lower layer"

step "write, sync, delete and trim"
dd if=/dev/urandom of=/tmp/m/new.bin bs=64k count=48 2>/dev/null || fail "write new.bin"
mkdir -p /tmp/m/newdir && echo hello-upper >/tmp/m/newdir/hello.txt || fail "write hello.txt"
(cd /tmp/m && sha256sum new.bin newdir/hello.txt) >/mnt/written.sha256
sync -f /tmp/m/new.bin || sync
rm /tmp/m/big.bin || fail "rm big.bin"
sync -f /tmp/m || sync
fstrim -v /tmp/m || fail "fstrim"
umount /tmp/m || fail "umount"

step "trimmed blocks of big.bin read as zeros"
echo 3 >/proc/sys/vm/drop_caches
while read -r start count; do
	dd if=/dev/$sd bs=4096 skip=$start count=$count 2>/dev/null | zeros_only ||
		fail "blocks $start+$count of the deleted file are not zero after fstrim"
done </mnt/big.blocks

step "remount and read back"
mount -t ext4 /dev/$sd /tmp/m || fail "remount"
(cd /tmp/m && sha256sum -c /mnt/written.sha256) || fail "written files"
[ ! -e /tmp/m/big.bin ] || fail "big.bin is back"
umount /tmp/m || fail "umount"

step "teardown"
detach 1 || fail "detach"
grep -q "device closed" $DLOG || fail "the daemon did not close the device"
stop_daemon
echo "tcmu-daemon: ok"
