//go:build windows

package clusternet

import "golang.org/x/sys/windows"

// underWine reports whether the tests run under Wine, whose ntdll says so.
var underWine = windows.NewLazySystemDLL("ntdll.dll").NewProc("wine_get_version").Find() == nil

// platformLacks says which features Windows, or Wine, does not have.
func platformLacks(feature string) string {
	switch feature {
	case "signals":
		return "Windows has no signals: Kill terminates the process whatever the signal"
	case "rr":
		return "Windows never round-robins: SchedRR falls back to SchedNone, as in Node"
	case "reuseport":
		return "Windows has no SO_REUSEPORT: with SO_REUSEADDR sockets share a port, but the system does not spread connections across them"
	case "unix":
		if underWine {
			return "Wine 8 has no AF_UNIX sockets (WSAEAFNOSUPPORT)"
		}
	case "udp":
		if underWine {
			return "Go's UDP sockets do not work under Wine 8: WSAIoctl(SIO_UDP_NETRESET) fails with WSAEOPNOTSUPP (10045)"
		}
	}
	return ""
}
