package clusternet

// Runs in a worker: Windows never round-robins (see primary_rr_windows.go).

import "net"

func handoffConn(h sysHandle) (*net.UnixConn, error) { return nil, errNoHandoff }

func recvConn(c *net.UnixConn) (h sysHandle, last bool, err error) { return 0, false, errNoHandoff }

func recvConnNow(c *net.UnixConn) (h sysHandle, last bool, err error) { return 0, false, errNoHandoff }

func waitReadable(c *net.UnixConn) error { return errNoHandoff }

func watchCopy(c *net.UnixConn) (*net.UnixConn, error) { return nil, errNoHandoff }
