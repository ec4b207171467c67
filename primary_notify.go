package clusternet

// Runs in the primary: telling a service manager what Run is doing
// (systemd's sd_notify protocol, for Type=notify services).

import (
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
)

// envNotifySocket names the datagram socket a service manager listens on.
const envNotifySocket = "NOTIFY_SOCKET"

// notifier sends state lines to the service manager: one datagram of
// newline-separated KEY=value assignments per change, as sd_notify(3) does.
// A nil notifier sends nothing.
type notifier struct {
	addr  *net.UnixAddr
	log   *slog.Logger
	muted atomic.Bool // the process is no longer the service's main one (Upgrade)
}

// newNotifier returns a notifier for NOTIFY_SOCKET, or nil when it is not
// set or names a socket this primary cannot reach (logged). A name that
// starts with "@" is in the abstract namespace, as systemd writes it.
func newNotifier(log *slog.Logger) *notifier {
	name := os.Getenv(envNotifySocket)
	if name == "" {
		return nil
	}
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		// systemd also offers vsock: for virtual machines; not supported.
		log.Warn("NOTIFY_SOCKET is neither a path nor an abstract name; not notifying", "NOTIFY_SOCKET", name)
		return nil
	}
	return &notifier{addr: &net.UnixAddr{Name: name, Net: "unixgram"}, log: log}
}

// send sends the non-empty lines as one notification. A failure is logged:
// the service manager may have gone, and the cluster serves on regardless.
func (n *notifier) send(lines ...string) {
	if n == nil || n.muted.Load() {
		return
	}
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	// A socket per notification: they come a few per reload, and a
	// connected socket would go stale if the service manager restarts.
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err == nil {
		_, err = c.Write([]byte(b.String()))
		c.Close()
	}
	if err != nil {
		n.log.Warn("cannot notify the service manager", "NOTIFY_SOCKET", n.addr.Name, "err", err)
	}
}

// mute stops the notifications: after Upgrade, the new primary speaks for
// the service.
func (n *notifier) mute() {
	if n != nil {
		n.muted.Store(true)
	}
}
