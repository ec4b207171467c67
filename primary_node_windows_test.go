package clusternet

// Node workers on Windows: Fork refuses them with a clear error (Node's
// channel there is a named pipe this primary does not speak).

import (
	"errors"
	"testing"
)

func TestNodeJSUnsupported(t *testing.T) {
	old := CurrentSettings()
	if err := SetupPrimary(Settings{Exec: "node", Args: []string{"server.js"}, NodeIPC: true}); err != nil {
		t.Fatal(err)
	}
	defer SetupPrimary(old)
	w, err := Fork()
	if !errors.Is(err, errNodeNoChannel) {
		t.Fatalf("Fork with NodeIPC on Windows: %v, %v; want errNodeNoChannel", w, err)
	}
}
