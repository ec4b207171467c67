package clusternet

// inheritActivatedSockets finds nothing: socket activation is a Unix
// convention.
func inheritActivatedSockets() []*activatedSocket { return nil }
