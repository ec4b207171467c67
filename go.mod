module github.com/clusternet-go/clusternet

go 1.26.0

require (
	// examples/websocket and its test only: the package never imports it.
	github.com/coder/websocket v1.8.14
	github.com/google/go-cmp v0.7.0
	github.com/libp2p/go-reuseport v0.4.0
	golang.org/x/sys v0.50.0
)
