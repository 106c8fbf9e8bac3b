// Package dist holds what is installed next to the binaries: the default
// overlaybd.json (installed to /etc/overlaybd/) and the systemd units under
// systemd/. Its tests check the files and the layout scripts/install.sh
// produces; the package has no code.
package dist
