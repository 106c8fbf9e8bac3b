#!/bin/sh
# Installs or removes overlaybd's binaries, default configuration and systemd
# units, in the layout upstream's users and the snapshotter expect:
#
#   $DESTDIR$PREFIX/bin/overlaybd-*           (PREFIX defaults to /opt/overlaybd)
#   $DESTDIR/etc/overlaybd/overlaybd.json     (never overwrites an existing one)
#   $DESTDIR$UNITDIR/*.service                (UNITDIR defaults to /lib/systemd/system)
#
# usage: scripts/install.sh install|uninstall
#        scripts/install.sh deb OUTDIR     (a Debian package of the same tree)
# environment: DESTDIR, PREFIX, SYSCONFDIR (/etc/overlaybd), UNITDIR,
#              BINSRC (directory holding the built binaries, default ./bin),
#              VERSION (of the package, default from git describe)
set -eu

cmd=${1:-}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/overlaybd}
SYSCONFDIR=${SYSCONFDIR:-/etc/overlaybd}
UNITDIR=${UNITDIR:-/lib/systemd/system}
top=$(cd "$(dirname "$0")/.." && pwd)
BINSRC=${BINSRC:-$top/bin}

die() { echo "install.sh: $*" >&2; exit 1; }

# Units name the default paths; a different PREFIX or SYSCONFDIR is
# substituted when they are installed.
unit_sed() {
	sed -e "s|/opt/overlaybd/bin/|$PREFIX/bin/|g" \
		-e "s|/etc/overlaybd/|$SYSCONFDIR/|g" "$1"
}

binaries() {
	for f in "$BINSRC"/overlaybd-*; do
		[ -f "$f" ] && [ -x "$f" ] && echo "$f"
	done
	return 0
}

do_install() {
	bins=$(binaries)
	[ -n "$bins" ] || die "no overlaybd-* binaries in $BINSRC (run 'make build' first)"
	install -d -m 0755 "$DESTDIR$PREFIX/bin"
	for f in $bins; do
		install -m 0755 "$f" "$DESTDIR$PREFIX/bin/"
	done

	install -d -m 0755 "$DESTDIR$SYSCONFDIR" "$DESTDIR$SYSCONFDIR/nbd"
	if [ -e "$DESTDIR$SYSCONFDIR/overlaybd.json" ]; then
		echo "install.sh: keeping existing $DESTDIR$SYSCONFDIR/overlaybd.json" >&2
	else
		install -m 0644 "$top/dist/overlaybd.json" "$DESTDIR$SYSCONFDIR/overlaybd.json"
	fi

	install -d -m 0755 "$DESTDIR$UNITDIR"
	for u in "$top"/dist/systemd/*.service; do
		[ -f "$u" ] || continue
		unit_sed "$u" >"$DESTDIR$UNITDIR/$(basename "$u")"
		chmod 0644 "$DESTDIR$UNITDIR/$(basename "$u")"
	done

	if [ -f "$top/docs/operations.md" ]; then
		install -d -m 0755 "$DESTDIR$PREFIX/share/doc"
		install -m 0644 "$top/docs/operations.md" "$DESTDIR$PREFIX/share/doc/operations.md"
	fi
	if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
}

do_uninstall() {
	for f in "$DESTDIR$PREFIX"/bin/overlaybd-*; do
		[ -e "$f" ] && rm -f "$f"
	done
	for u in "$top"/dist/systemd/*.service; do
		[ -f "$u" ] && rm -f "$DESTDIR$UNITDIR/$(basename "$u")"
	done
	rm -f "$DESTDIR$PREFIX/share/doc/operations.md"
	# The configuration is removed only when it is still the default one.
	conf=$DESTDIR$SYSCONFDIR/overlaybd.json
	if [ -f "$conf" ]; then
		if cmp -s "$conf" "$top/dist/overlaybd.json"; then
			rm -f "$conf"
		else
			echo "install.sh: keeping modified $conf" >&2
		fi
	fi
	# Empty directories go; anything an operator put there stays.
	for d in "$DESTDIR$SYSCONFDIR/nbd" "$DESTDIR$SYSCONFDIR" "$DESTDIR$PREFIX/share/doc" \
		"$DESTDIR$PREFIX/share" "$DESTDIR$PREFIX/bin" "$DESTDIR$PREFIX"; do
		[ -d "$d" ] && rmdir "$d" 2>/dev/null || true
	done
	if [ -z "$DESTDIR" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
}

# do_deb stages the install tree and packs it with dpkg-deb; the
# configuration is a conffile, so upgrades keep an operator's edits.
do_deb() {
	out=${1:-}
	[ -n "$out" ] || die "usage: $0 deb OUTDIR"
	command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
	version=${VERSION:-$(git -C "$top" describe --tags --always 2>/dev/null || echo 0)}
	case $version in [0-9]*) ;; *) version=0~$version ;; esac
	arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	chmod 0755 "$stage"
	DESTDIR=$stage
	do_install
	install -d -m 0755 "$stage/DEBIAN"
	cat >"$stage/DEBIAN/control" <<CONTROL
Package: overlaybd
Version: $version
Architecture: $arch
Maintainer: overlaybd-go <overlaybd-go@users.noreply.github.com>
Section: admin
Priority: optional
Description: overlaybd block-device images for containers
 Daemons (overlaybd-tcmu, overlaybd-nbd) and tools that create, commit,
 convert and serve overlaybd (DADI) images.
CONTROL
	echo "$SYSCONFDIR/overlaybd.json" >"$stage/DEBIAN/conffiles"
	cat >"$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTINST
	chmod 0755 "$stage/DEBIAN/postinst"
	mkdir -p "$out"
	dpkg-deb --root-owner-group -Zgzip --build "$stage" "$out/overlaybd_${version}_${arch}.deb" >&2
	echo "$out/overlaybd_${version}_${arch}.deb"
}

case $cmd in
install) do_install ;;
uninstall) do_uninstall ;;
deb) do_deb "${2:-}" ;;
*) die "usage: $0 install|uninstall|deb OUTDIR (environment: DESTDIR PREFIX SYSCONFDIR UNITDIR BINSRC VERSION)" ;;
esac
