#!/usr/bin/env bash
# Boots Debian's kernel in qemu (software emulation) with a busybox initramfs
# and a 9p share, runs one guest script inside, and exits with the script's
# exit code.
#
#   test/vm/run.sh [-s SHARE] [-t SECONDS] [-m MIB] [-k] [-n] GUEST_SCRIPT [ARGS...]
#
#   -s SHARE    host directory shared with the guest at /mnt (default: a new
#               directory under the cache). The guest script is copied into it.
#   -t SECONDS  bound on the whole guest run (default 300, env VM_TIMEOUT).
#   -m MIB      guest memory (default 768, env VM_MEM).
#   -k          keep the share directory even on success.
#   -n          give the guest a network card on qemu's user-mode network
#               (virtio-net, eth0; the guest script configures it: the host's
#               127.0.0.1 is reachable from the guest as 10.0.2.2).
#
# Inside the guest the script runs as `sh /mnt/<script> ARGS...` with the
# working directory /mnt, configfs mounted, and the modules target_core_user,
# tcm_loop, sd_mod, ext4, nbd and loop loaded. Its standard output and error
# go to the serial console, which is saved as SHARE/console.log.
#
# The kernel package is resolved at run time from what linux-image-amd64
# depends on, downloaded with apt-get download and unpacked (never installed).
# Everything built is cached under $OVERLAYBD_VM_CACHE, or
# $XDG_CACHE_HOME/overlaybd-vm, or ~/.cache/overlaybd-vm.
#
# Exit codes: the guest script's exit code; 124 when the guest did not finish
# in time; 125 when the harness itself failed (no kernel, no qemu, no exit
# code from the guest). The harness never reports success without the guest
# having written its exit code.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${OVERLAYBD_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/overlaybd-vm}
TIMEOUT=${VM_TIMEOUT:-300}
MEM=${VM_MEM:-768}
SHARE=""
KEEP=0
NET=(-net none)
# Top-level modules the guest loads; their dependency closures are computed
# with modprobe --show-depends against the unpacked kernel.
MODULES=(configfs uio target_core_mod target_core_user tcm_loop sd_mod
	virtio_pci 9pnet_virtio 9p ext4 nbd loop crc32c_generic crc32c_intel virtio_net)
PACKAGES=(qemu-system-x86 busybox-static cpio kmod xz-utils)

die() { echo "test/vm: $*" >&2; exit 125; }
log() { echo "test/vm: $*" >&2; }

while getopts "s:t:m:kn" opt; do
	case $opt in
	s) SHARE=$OPTARG ;;
	t) TIMEOUT=$OPTARG ;;
	m) MEM=$OPTARG ;;
	k) KEEP=1 ;;
	n) NET=(-nic user,model=virtio-net-pci) ;;
	*) die "usage: $0 [-s SHARE] [-t SECONDS] [-m MIB] [-k] [-n] GUEST_SCRIPT [ARGS...]" ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || die "usage: $0 [-s SHARE] [-t SECONDS] [-m MIB] [-k] [-n] GUEST_SCRIPT [ARGS...]"
SCRIPT=$1
shift
[ -f "$SCRIPT" ] || die "guest script $SCRIPT not found"

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
		die "need root for: $*"
	fi
}

# ensure_packages installs the host packages the harness needs, once.
ensure_packages() {
	local missing=()
	command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
	dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
	command -v cpio >/dev/null || missing+=(cpio)
	command -v depmod >/dev/null || [ -x /sbin/depmod ] || missing+=(kmod)
	command -v xz >/dev/null || missing+=(xz-utils)
	command -v apt-get >/dev/null || die "apt-get not found: the harness needs a Debian host"
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing ${missing[*]}"
		as_root timeout 600 apt-get update -qq || die "apt-get update failed"
		as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${PACKAGES[@]}" >&2 ||
			die "apt-get install ${PACKAGES[*]} failed"
	fi
}

# resolve_kernel prints the concrete linux-image package name.
resolve_kernel() {
	local pkg
	pkg=$(timeout 60 apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [ -z "$pkg" ]; then
		# The package lists may be missing on a fresh machine.
		as_root timeout 600 apt-get update -qq >&2 || true
		pkg=$(timeout 60 apt-cache depends linux-image-amd64 2>/dev/null |
			awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	fi
	[ -n "$pkg" ] || die "cannot resolve the package linux-image-amd64 depends on"
	echo "$pkg"
}

# extract_vmlinux KERNEL_IMAGE OUT: decompress the xz payload of a bzImage
# into an uncompressed ELF vmlinux (boots about three times faster in TCG).
extract_vmlinux() {
	local img=$1 out=$2 off
	for off in $(grep -obUaP '\xFD7zXZ\x00' "$img" | cut -d: -f1); do
		if tail -c +$((off + 1)) "$img" | xz -dc --single-stream >"$out.tmp" 2>/dev/null &&
			[ "$(head -c 4 "$out.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
			mv "$out.tmp" "$out"
			return 0
		fi
	done
	rm -f "$out.tmp"
	return 1
}

# prepare_kernel sets KVER, KROOT, VMLINUX (cached per kernel package).
prepare_kernel() {
	local pkg dir deb
	pkg=$(resolve_kernel)
	dir=$CACHE/kernel/$pkg
	if [ ! -f "$dir/.done" ]; then
		log "fetching $pkg"
		rm -rf "$dir"
		mkdir -p "$dir/dl" "$dir/root"
		(cd "$dir/dl" && timeout 600 apt-get download -qq "$pkg" >&2) || die "apt-get download $pkg failed"
		deb=$(ls "$dir"/dl/*.deb | head -1)
		dpkg-deb -x "$deb" "$dir/root" || die "dpkg-deb -x $deb failed"
		rm -rf "$dir/dl"
		KVER=$(ls "$dir/root/lib/modules" | head -1)
		[ -n "$KVER" ] || die "no modules in $pkg"
		depmod -b "$dir/root" "$KVER" || die "depmod failed"
		extract_vmlinux "$dir/root/boot/vmlinuz-$KVER" "$dir/vmlinux" ||
			cp "$dir/root/boot/vmlinuz-$KVER" "$dir/vmlinux"
		echo "$KVER" >"$dir/kver"
		touch "$dir/.done"
	fi
	KVER=$(cat "$dir/kver")
	KROOT=$dir/root
	VMLINUX=$dir/vmlinux
}

# prepare_initrd sets INITRD (cached per kernel and per harness version).
prepare_initrd() {
	local key stage m line f rel busybox
	busybox=/bin/busybox
	key=$( (echo "$KVER" "${MODULES[*]}"; cat "$HERE/init.sh"; sha256sum "$busybox") | sha256sum | cut -c1-16)
	INITRD=$CACHE/initrd-$KVER-$key.cpio.gz
	[ -f "$INITRD" ] && return 0
	log "building initramfs for $KVER"
	stage=$(mktemp -d "$CACHE/stage.XXXXXX")
	mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,mnt,tmp,run,etc,root,var/tmp}
	cp "$busybox" "$stage/bin/busybox"
	for a in $("$stage/bin/busybox" --list); do
		[ "$a" = busybox ] && continue
		[ -e "$stage/bin/$a" ] || ln -s busybox "$stage/bin/$a"
	done
	ln -sf ../bin/busybox "$stage/sbin/modprobe"
	ln -sf ../bin/busybox "$stage/sbin/insmod"
	: >"$stage/modules.order"
	for m in "${MODULES[@]}"; do
		modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null | while read -r line; do
			case $line in
			insmod\ *)
				f=$(echo "$line" | awk '{print $2}')
				rel=${f#"$KROOT"}
				mkdir -p "$stage$(dirname "$rel")"
				case $f in
				*.ko.xz) xz -dc "$f" >"$stage${rel%.xz}"; rel=${rel%.xz} ;;
				*.ko.zst) zstd -qdc "$f" >"$stage${rel%.zst}"; rel=${rel%.zst} ;;
				*) cp "$f" "$stage$rel" ;;
				esac
				grep -qx "$rel" "$stage/modules.order" || echo "$rel" >>"$stage/modules.order"
				;;
			esac
		done
	done
	[ -s "$stage/modules.order" ] || die "no module closure found for $KVER"
	cp "$KROOT/lib/modules/$KVER/modules.builtin"* "$stage/lib/modules/$KVER/" 2>/dev/null || true
	cp "$KROOT/lib/modules/$KVER/modules.order" "$stage/lib/modules/$KVER/" 2>/dev/null || true
	depmod -b "$stage" "$KVER" || die "depmod of the initramfs failed"
	install -m 0755 "$HERE/init.sh" "$stage/init"
	(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$INITRD.tmp" || die "cpio failed"
	mv "$INITRD.tmp" "$INITRD"
	rm -rf "$stage"
}

mkdir -p "$CACHE"
ensure_packages
exec 9>"$CACHE/.lock"
timeout 900 flock 9 || die "cache lock not acquired"
prepare_kernel
prepare_initrd
flock -u 9

if [ -z "$SHARE" ]; then
	mkdir -p "$CACHE/runs"
	SHARE=$(mktemp -d "$CACHE/runs/run.XXXXXX")
	OWN_SHARE=1
else
	mkdir -p "$SHARE"
	OWN_SHARE=0
fi
SHARE=$(cd "$SHARE" && pwd)
NAME=$(basename "$SCRIPT")
[ "$(cd "$(dirname "$SCRIPT")" && pwd)/$NAME" = "$SHARE/$NAME" ] || cp "$SCRIPT" "$SHARE/$NAME"
rm -f "$SHARE/.vm-exit" "$SHARE/console.log"
printf '%s\n' "$@" >"$SHARE/.vm-args"

log "booting $KVER for $NAME (share $SHARE, timeout ${TIMEOUT}s)"
start=$(date +%s)
set +e
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
	-cpu max -smp 2 -accel tcg,thread=multi -m "$MEM" \
	-nodefaults -display none -serial stdio "${NET[@]}" -no-reboot \
	-kernel "$VMLINUX" -initrd "$INITRD" \
	-append "console=ttyS0 panic=-1 quiet loglevel=4 obd.script=$NAME" \
	-virtfs "local,path=$SHARE,mount_tag=host0,security_model=none,id=host0" \
	</dev/null 2>&1 | tee "$SHARE/console.log"
qrc=${PIPESTATUS[0]}
set -e
log "guest finished in $(($(date +%s) - start))s (qemu status $qrc)"

if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	log "guest timed out after ${TIMEOUT}s; logs kept in $SHARE"
	exit 124
fi
if [ ! -s "$SHARE/.vm-exit" ]; then
	log "guest wrote no exit code (qemu status $qrc); logs kept in $SHARE"
	exit 125
fi
rc=$(tr -dc '0-9' <"$SHARE/.vm-exit")
[ -n "$rc" ] || { log "bad exit code file; logs kept in $SHARE"; exit 125; }
if [ "$rc" != 0 ]; then
	log "guest script $NAME failed with status $rc; logs kept in $SHARE"
elif [ "$OWN_SHARE" = 1 ] && [ "$KEEP" = 0 ]; then
	rm -rf "$SHARE"
fi
exit "$rc"
