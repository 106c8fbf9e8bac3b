package matrix

// tcmuDeclared says why a TCMU cell is not run ("" when it runs).
func tcmuDeclared(c Cell) (Status, string) {
	if c.Frontend != "tcmu" {
		return "", ""
	}
	return Impossible, "TCMU needs the target_core_user kernel module, configfs and root, which a test process cannot have: it runs in the VM tier (make test-vm: frontends/tcmu and overlaybd-tcmu against a real kernel)"
}
