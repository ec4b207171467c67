package clusternet

import (
	"context"
	"errors"
	"net"
	"os"
	"time"
)

// lnUDPRequest sends a datagram to an ln-serve worker from a new socket and
// returns the answer. A datagram can be lost even on loopback (a full
// receive buffer), so it is sent again when no answer comes: losing one is
// not a failure, never getting an answer is.
func lnUDPRequest(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 2048)
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if attempt == 20 {
			return "", errors.New("no answer to 20 datagrams")
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
