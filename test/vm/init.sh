#!/bin/sh
# /init of the test initramfs (busybox). Mounts the pseudo file systems and
# the host share, loads the test modules, runs the guest script named by
# obd.script= on the kernel command line, stores its exit code in the share
# and powers off. Installed by test/vm/run.sh.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run

while read -r m; do
	insmod "$m" 2>/dev/null
done </modules.order
mount -t configfs configfs /sys/kernel/config

script=
for arg in $(cat /proc/cmdline); do
	case $arg in obd.script=*) script=${arg#obd.script=} ;; esac
done

rc=125
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 host0 /mnt; then
	if [ -n "$script" ] && [ -f "/mnt/$script" ]; then
		cd /mnt
		IFS='
'
		set -- $(cat /mnt/.vm-args 2>/dev/null)
		unset IFS
		echo "vm: running $script"
		sh "/mnt/$script" "$@"
		rc=$?
		cd /
		echo "vm: $script exited with $rc"
	else
		echo "vm: no guest script (obd.script=$script)"
	fi
	dmesg >/mnt/dmesg.log 2>/dev/null
	# The share is mounted without caching: the write reaches the host at
	# once. No global sync: it would wait for block devices a failed test
	# may have left hanging.
	echo "$rc" >/mnt/.vm-exit
else
	echo "vm: cannot mount the host share"
fi
poweroff -f
