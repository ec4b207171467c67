module github.com/clusternet-go/clusternet

go 1.26.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/libp2p/go-reuseport v0.4.0
	golang.org/x/sys v0.50.0
)
