package clusternet

// Shared: socket activation does not exist on Windows.

// inheritActivatedSockets finds nothing: socket activation is a Unix
// convention.
func inheritActivatedSockets() []*activatedSocket { return nil }
