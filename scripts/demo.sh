#!/usr/bin/env bash
# The project's demo: build a small overlaybd image and serve it as a block
# device over NBD.
#
#   scripts/demo.sh            build the image, serve it until Ctrl-C, print how to attach
#   scripts/demo.sh --check    build it, serve it, prove it with real NBD clients, exit 0/1
#
# The image is an ext4 filesystem made with `mkfs.ext4 -d` from a sample
# directory, imported as a committed layer (overlaybd-import), with a
# writable upper layer on top (overlaybd-create), described by a
# config.v1.json and served by overlaybd-nbd on a unix socket.
#
# Environment: BIN (folder of the binaries, default ./bin), DEMO_DIR (work
# folder, default a new /tmp/overlaybd-demo.XXXXXX, removed after a passing
# --check unless DEMO_KEEP=1), DEMO_TCP (HOST[:PORT]:
# serve on TCP instead of the unix socket; the demo without --check only).
# Needs: e2fsprogs; --check also libnbd-bin (nbdcopy, nbdinfo) and, for the
# mount test (root, /dev/fuse), fuse3.
set -euo pipefail

check=0
case "${1:-}" in
--check) check=1 ;;
"") ;;
-h | --help)
	sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$root/bin}
for t in overlaybd-import overlaybd-create overlaybd-nbd; do
	if [ ! -x "$BIN/$t" ]; then
		echo "demo: $BIN/$t is missing: run 'make build' first" >&2
		exit 1
	fi
done
need() {
	command -v "$1" >/dev/null 2>&1 || {
		echo "demo: $1 is missing: run 'scripts/deps.sh demo' (apt: $2)" >&2
		exit 1
	}
}
need mkfs.ext4 e2fsprogs
need debugfs e2fsprogs

work=${DEMO_DIR:-$(mktemp -d /tmp/overlaybd-demo.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
if [ -t 2 ]; then
	say() { printf '\033[1mdemo:\033[0m %s\n' "$*" >&2; }
else
	say() { printf 'demo: %s\n' "$*" >&2; }
fi

# 1. A sample directory, made into an ext4 image.
content=$work/content
rm -rf "$content" "$work/layers" "$work/upper" "$work/base.ext4"
mkdir -p "$content/docs" "$content/bin"
echo "Hello from an overlaybd image served over NBD!" >"$content/hello.txt"
cp "$root/README.md" "$content/docs/README.md"
for i in $(seq 1 64); do echo "line $i of a sample file in the base layer"; done >"$content/docs/lines.txt"
head -c 1048576 /dev/urandom >"$content/bin/random.bin"
sha_random=$(sha256sum "$content/bin/random.bin" | cut -d' ' -f1)
say "making an ext4 filesystem from $content"
mkfs.ext4 -q -F -L obd-demo -d "$content" "$work/base.ext4" 64M >&2

# 2. The committed base layer, in the layer directory layout the daemon probes.
mkdir -p "$work/layers/base" "$work/upper"
"$BIN/overlaybd-import" -m "demo base layer" "$work/base.ext4" "$work/layers/base/overlaybd.commit" >&2

# 3. A writable upper layer (virtual size 0: adopts the base's 64 MiB).
"$BIN/overlaybd-create" "$work/upper/writable_data" "$work/upper/writable_index" 0 >&2

# 4. The configurations.
cat >"$work/overlaybd.json" <<EOF
{"logConfig": {"logPath": ""}, "logPath": "", "enableAudit": false,
 "cacheConfig": {"cacheType": "file", "cacheDir": "$work/cache", "cacheSizeGB": 1}, "ioEngine": 0}
EOF
cat >"$work/config.v1.json" <<EOF
{
  "lowers": [{"dir": "$work/layers/base"}],
  "upper": {"index": "$work/upper/writable_index", "data": "$work/upper/writable_data"},
  "resultFile": "$work/init-debug.log"
}
EOF
sock=$work/nbd.sock
rm -f "$sock"

if [ "$check" = 0 ]; then
	if [ -n "${DEMO_TCP:-}" ]; then
		listen=(--tcp "$DEMO_TCP")
		host=${DEMO_TCP%:*}
		port=${DEMO_TCP##*:}
		[ "$port" = "$DEMO_TCP" ] && port=10809
		uri="nbd://$host:$port/"
		qemu="nbd://$host:$port"
		nbdclient="nbd-client $host $port /dev/nbd0"
	else
		listen=(--unix "$sock")
		uri="nbd+unix:///?socket=$sock"
		qemu="nbd:unix:$sock"
		nbdclient="nbd-client -u $sock /dev/nbd0"
	fi
	cat >&2 <<EOF

The image is ready in $work:
  layers/base/overlaybd.commit   committed ext4 layer (from overlaybd-import)
  upper/writable_{data,index}    writable layer (from overlaybd-create)
  config.v1.json                 the image configuration

Serving it now with overlaybd-nbd (Ctrl-C to stop). In another terminal:

  nbdinfo '$uri'                              # size, flags, exports
  nbdinfo --map '$uri'                        # allocated and zero ranges
  nbdcopy '$uri' copy.raw && debugfs -R 'cat /hello.txt' copy.raw

  qemu-system-x86_64 -m 1G -drive file=$qemu,format=raw,if=virtio ...   # as a VM disk
  qemu-img info $qemu

  sudo modprobe nbd && sudo $nbdclient && sudo mount /dev/nbd0 /mnt   # kernel NBD client

  mkdir -p m mnt && nbdfuse m '$uri' &      # no kernel module: FUSE + loop
  sudo mount -o loop m/nbd mnt && cat mnt/hello.txt

Writes land in the upper layer; commit it afterwards with
  bin/overlaybd-commit $work/upper/writable_data $work/upper/writable_index new.commit

EOF
	"$BIN/overlaybd-nbd" --service_config_path "$work/overlaybd.json" "${listen[@]}" "$work/config.v1.json"
	exit $?
fi

# --check: serve in the background and prove it with real clients.
need nbdcopy libnbd-bin
need nbdinfo libnbd-bin
fail() {
	echo "demo-check: FAILED: $*" >&2
	exit 1
}
server=""
fuse_pid=""
cleanup() {
	set +e
	mountpoint -q "$work/fs" 2>/dev/null && umount "$work/fs"
	[ -n "${loopdev:-}" ] && losetup -d "$loopdev" 2>/dev/null
	if [ -n "$fuse_pid" ]; then
		fusermount3 -u "$work/fuse" 2>/dev/null
		kill "$fuse_pid" 2>/dev/null
		wait "$fuse_pid" 2>/dev/null
	fi
	[ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
}
trap cleanup EXIT

start_server() {
	rm -f "$sock"
	"$BIN/overlaybd-nbd" --service_config_path "$work/overlaybd.json" --unix "$sock" "$@" "$work/config.v1.json" 2>>"$work/server.log" &
	server=$!
	for _ in $(seq 1 100); do
		[ -S "$sock" ] && return 0
		kill -0 "$server" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/server.log" >&2
	fail "overlaybd-nbd did not start"
}
stop_server() {
	kill -TERM "$server"
	local rc=0
	wait "$server" || rc=$?
	server=""
	[ "$rc" = 0 ] || fail "overlaybd-nbd exited $rc after SIGTERM"
}
uri="nbd+unix:///?socket=$sock"

start_server
[ "$(cat "$work/init-debug.log")" = success ] || fail "result file: $(cat "$work/init-debug.log")"
size=$(nbdinfo --size "$uri")
[ "$size" = 67108864 ] || fail "nbdinfo size $size"
say "nbdinfo: size $size; $(nbdinfo --map "$uri" | grep -c data) data extents"

# Read a file out through the NBD client.
nbdcopy "$uri" "$work/copy.raw"
got=$(debugfs -R 'cat /hello.txt' "$work/copy.raw" 2>/dev/null)
[ "$got" = "Hello from an overlaybd image served over NBD!" ] || fail "hello.txt read through NBD: '$got'"
debugfs -R 'dump /bin/random.bin '"$work/random.out" "$work/copy.raw" >/dev/null 2>&1
[ "$(sha256sum "$work/random.out" | cut -d' ' -f1)" = "$sha_random" ] || fail "random.bin differs"
say "read /hello.txt and /bin/random.bin through nbdcopy: OK"

# Mount it with the kernel's ext4 on nbdfuse + loop, write, and check.
if [ "$(id -u)" = 0 ] && [ -c /dev/fuse ] && command -v nbdfuse >/dev/null && command -v losetup >/dev/null; then
	mkdir -p "$work/fuse" "$work/fs"
	nbdfuse "$work/fuse" "$uri" &
	fuse_pid=$!
	for _ in $(seq 1 100); do
		[ -e "$work/fuse/nbd" ] && break
		sleep 0.1
	done
	[ -e "$work/fuse/nbd" ] || fail "nbdfuse did not expose the device"
	loopdev=$(losetup -f --show "$work/fuse/nbd")
	mount -t ext4 "$loopdev" "$work/fs"
	[ "$(cat "$work/fs/hello.txt")" = "Hello from an overlaybd image served over NBD!" ] || fail "hello.txt through the ext4 mount"
	echo "written through nbdfuse + ext4" >"$work/fs/written.txt"
	head -c 300000 /dev/urandom >"$work/fs/big.bin"
	sha_big=$(sha256sum "$work/fs/big.bin" | cut -d' ' -f1)
	umount "$work/fs"
	losetup -d "$loopdev"
	loopdev=""
	fusermount3 -u "$work/fuse"
	wait "$fuse_pid" || true
	fuse_pid=""
	stop_server
	say "mounted ext4 through nbdfuse, wrote 2 files, unmounted, server stopped cleanly"

	# Reopen: the writes are in the upper layer.
	start_server --read-only
	rm -f "$work/copy.raw"
	nbdcopy "$uri" "$work/copy-ro.raw"
	stop_server
	start_server
	nbdcopy "$uri" "$work/copy.raw"
	stop_server
	cmp -s "$work/copy-ro.raw" "$work/base.ext4" || fail "--read-only export is not the base layer"
	e2fsck -fn "$work/copy.raw" >"$work/fsck.log" 2>&1 || {
		cat "$work/fsck.log" >&2
		fail "e2fsck found problems"
	}
	[ "$(debugfs -R 'cat /written.txt' "$work/copy.raw" 2>/dev/null)" = "written through nbdfuse + ext4" ] || fail "written.txt lost"
	debugfs -R 'dump /big.bin '"$work/big.out" "$work/copy.raw" >/dev/null 2>&1
	[ "$(sha256sum "$work/big.out" | cut -d' ' -f1)" = "$sha_big" ] || fail "big.bin differs after reopen"
	say "reopened: e2fsck -fn clean, written files intact, --read-only shows the base layer"
else
	say "mount test skipped (needs root, /dev/fuse, nbdfuse and losetup)"
	stop_server
fi
say "demo-check passed"
if [ -z "${DEMO_DIR:-}" ] && [ "${DEMO_KEEP:-0}" != 1 ]; then
	trap - EXIT
	cleanup
	rm -rf "$work"
fi
