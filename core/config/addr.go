package config

import (
	"net"
	"strconv"
	"strings"
)

// splitHostPort splits "host:port", "[v6]:port", "host", "[v6]" or a bare
// IPv6 address into host (without brackets) and port ("" when absent).
func splitHostPort(s string) (host, port string) {
	if h, p, err := net.SplitHostPort(s); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), ""
}

func joinHostPort(host string, port int) string {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// validHostPattern reports whether s is a host name, an IP address, or (with
// wildcard) "*.domain", optionally followed by ":port".
func validHostPattern(s string, wildcard bool) bool {
	host, port := splitHostPort(s)
	if port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	if net.ParseIP(host) != nil {
		return true
	}
	if wildcard {
		if rest, ok := strings.CutPrefix(host, "*."); ok {
			host = rest
		}
	}
	return validHostName(host)
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
