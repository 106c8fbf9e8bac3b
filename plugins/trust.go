package plugins

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// checkTrusted refuses a plugin binary that a user other than root or the
// current one could change: the binary must be a regular executable file
// and neither it nor its folder may be writable by other users. The folders
// above must not let others replace the binary's folder either (writable by
// others only with the sticky bit, as /tmp). Symbolic links are followed and
// the target is checked. It returns the resolved path.
func checkTrusted(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("binary %s: %w", path, err)
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return "", fmt.Errorf("binary %s: %w", path, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("binary %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("binary %s: %w: not a regular file", real, ErrUntrusted)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("binary %s: %w: not executable", real, ErrUntrusted)
	}
	if err := ownedSafely(real, fi, false); err != nil {
		return "", err
	}
	dir := filepath.Dir(real)
	for first := true; ; first = false {
		di, err := os.Stat(dir)
		if err != nil {
			return "", fmt.Errorf("folder %s of plugin binary: %w", dir, err)
		}
		if err := ownedSafely(dir, di, !first); err != nil {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return real, nil
}

// ownedSafely checks that path is owned by root or the current user and is
// not writable by group or others (for an ancestor folder, writable by
// others is allowed with the sticky bit).
func ownedSafely(path string, fi os.FileInfo, ancestor bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: %w: cannot read its owner", path, ErrUntrusted)
	}
	if uid := uint32(os.Geteuid()); st.Uid != 0 && st.Uid != uid {
		return fmt.Errorf("%s: %w: owned by uid %d, want root or uid %d", path, ErrUntrusted, st.Uid, uid)
	}
	perm := fi.Mode().Perm()
	if perm&0o022 != 0 && !(ancestor && fi.Mode()&os.ModeSticky != 0) {
		return fmt.Errorf("%s: %w: writable by other users (mode %v)", path, ErrUntrusted, fi.Mode())
	}
	return nil
}

// fileSHA256 returns the hex sha256 of a file, for error messages.
func fileSHA256(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unreadable"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unreadable"
	}
	return hex.EncodeToString(h.Sum(nil))
}
