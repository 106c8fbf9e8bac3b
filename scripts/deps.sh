#!/usr/bin/env bash
# Installs what building and testing the project needs on a Debian machine.
# Idempotent: packages already present are not installed again.
#
#   scripts/deps.sh            build and test dependencies
#   scripts/deps.sh demo       only what `make demo` needs
set -euo pipefail

want=(
	# cgo codec flavours and ISA-L CRC (build tags cgo_codecs, isal)
	liblz4-dev libzstd-dev libisal-dev
	# real NBD clients and peers for the NBD tests and benchmarks
	libnbd-bin qemu-utils nbdkit fio fuse3
	# ext4 tools for image tests
	e2fsprogs
	# the VM tier: qemu, an initramfs built from busybox, kernel modules, and
	# the kernel NBD client copied into the guest
	qemu-system-x86 busybox-static cpio kmod xz-utils nbd-client
)
if [ "${1:-}" = demo ]; then
	want=(e2fsprogs libnbd-bin qemu-utils fuse3)
fi

missing=()
for p in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "deps: installing ${missing[*]}" >&2
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cd "$(dirname "$0")/.."
go mod download
