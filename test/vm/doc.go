// Package vm holds the kernel-level test tier: run.sh boots Debian's kernel
// in qemu with a busybox initramfs and a 9p share and runs a guest script
// inside; the tests of this package (build tag vm, `make test-vm`) build
// static binaries, prepare images on the host, run the guest scripts under
// guest/ and check the results on the host with real tools (e2fsck,
// debugfs, overlaybd-commit).
package vm
