# overlaybd-tcmu serves an image whose lower layer is read lazily from a
# registry on the host (basic auth, credentials from credentialConfig's
# file), through the file cache, with a writable upper on top.
. /mnt/lib.sh

step "network"
ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add 10.0.2.15/24 dev eth0 || fail "address"
ip route add default via 10.0.2.2 || fail "route"

start_daemon
step "attach the registry-backed device"
sd=$(attach 3 "/mnt/img/config.v1.json;3") || fail "attach failed"
[ "$(cat /mnt/img/result)" = success ] || fail "result file: $(cat /mnt/img/result)"

step "mount and read the lower layer's files over the network"
mkdir -p /tmp/m
mount -t ext4 /dev/$sd /tmp/m || fail "mount"
(cd /tmp/m && sha256sum -c /mnt/expect.sha256) || fail "contents of the remote layer"

step "write into the upper, remount, read back"
dd if=/dev/urandom of=/tmp/m/new.bin bs=64k count=16 2>/dev/null || fail "write new.bin"
(cd /tmp/m && sha256sum new.bin) >/tmp/new.sha256
umount /tmp/m || fail "umount"
echo 3 >/proc/sys/vm/drop_caches
mount -t ext4 /dev/$sd /tmp/m || fail "remount"
(cd /tmp/m && sha256sum -c /tmp/new.sha256 && sha256sum -c /mnt/expect.sha256) || fail "read back"
umount /tmp/m || fail "umount"

step "the cache holds what was fetched; the audit log has the downloads"
[ -n "$(find /tmp/obd-cache -type f 2>/dev/null)" ] || fail "nothing in the cache directory"
grep -q "download" /tmp/obd-audit.log || fail "no download event in the audit log"
cp /tmp/obd-audit.log /mnt/audit.log

step "teardown"
detach 3 || fail "detach"
stop_daemon
echo "tcmu-remote: ok"
