package clusternet

// Runs in the primary: Node workers on Windows, where Node's IPC channel is
// a named pipe with its own framing, which this primary does not speak:
// Fork with Settings.NodeIPC returns an error.

// nodeSupported says that this system cannot fork Node workers.
const nodeSupported = false

// nodeSendBuffer is never called on Windows: no Node worker is forked.
func nodeSendBuffer(transport, int) int { return 0 }

// nodeAcceptNow is never called on Windows: no Node worker is forked.
func nodeAcceptNow(*sharedAddr, int) []sysHandle { return nil }

// nodeNonblock is never called on Windows: no Node worker is forked.
func nodeNonblock(sysHandle) error { return nil }
