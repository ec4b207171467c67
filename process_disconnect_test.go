package clusternet

// Leaving: Disconnect from the primary, of one worker or the cluster, and
// from the worker itself.

import (
	"fmt"
	"os"
	"slices"
	"testing"
)

func init() {
	// pm-selfdisconnect disconnects itself and says so on stdout (Silent)
	// from its own disconnect handler.
	helpers["pm-selfdisconnect"] = func() {
		Self().OnDisconnect(func() { fmt.Println("worker: disconnect handler ran") })
		if err := Self().Disconnect(); err != nil {
			fmt.Println("worker: Disconnect:", err)
			os.Exit(6)
		}
		select {}
	}

	// pm-selfkill leaves with Self().Kill(nil).
	helpers["pm-selfkill"] = func() {
		err := Self().Kill(nil)
		fmt.Fprintln(os.Stderr, "pm-selfkill: Kill returned", err)
		os.Exit(7)
	}
}

// Disconnecting an idle worker: it exits with code 0, and
// ExitedAfterDisconnect is true.
func TestProcessDisconnectIdle(t *testing.T) {
	w := pmFork(t, "idle")
	pmEvents(t, w, "the online event", pmHas("online"))
	if err := w.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false right after Disconnect")
	}
	if err := w.Disconnect(); err != nil {
		t.Errorf("second Disconnect: %v", err)
	}
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q, want exit code 0", st)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false after a disconnect")
	}
}

// Disconnect(ctx) disconnects every worker and waits for them; the
// cluster can fork again afterwards.
func TestProcessDisconnectCluster(t *testing.T) {
	ws := []*Worker{pmFork(t, "idle"), pmFork(t, "echo"), pmFork(t, "pm-listen")}
	pmEvents(t, ws[2], "the listening event", pmHas("listening"))
	if err := Disconnect(testContext(t)); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	for _, w := range ws {
		select {
		case <-w.Done():
		default:
			t.Errorf("worker %d has not exited when Disconnect returned", w.ID())
			continue
		}
		evs := pmFinished(t, w)
		pmNoErrors(t, w, evs)
		if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" || !w.ExitedAfterDisconnect() {
			t.Errorf("worker %d: %s, ExitedAfterDisconnect() = %v; want exit code 0 and true", w.ID(), st, w.ExitedAfterDisconnect())
		}
		if slices.Contains(Workers(), w) {
			t.Errorf("worker %d still in Workers()", w.ID())
		}
	}

	again := pmFork(t, "echo")
	if again.ID() <= ws[2].ID() {
		t.Errorf("id after Disconnect = %d, want more than %d", again.ID(), ws[2].ID())
	}
	echo(t, again, messages(again), "after the cluster disconnected")
}

// A worker that calls Self().Disconnect() runs its own disconnect handlers
// and exits with code 0, ExitedAfterDisconnect true.
func TestProcessSelfDisconnect(t *testing.T) {
	withSettings(t, Settings{Silent: true})
	w := pmFork(t, "pm-selfdisconnect")
	out := pmReadAll(t, w.Stdout())
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q, want exit code 0", st)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false after Self().Disconnect()")
	}
	if out != "worker: disconnect handler ran\n" {
		t.Errorf("worker stdout = %q, want its disconnect handler's line", out)
	}
}

// Self().Kill(nil) in a worker: exit code 0 and ExitedAfterDisconnect.
func TestProcessSelfKill(t *testing.T) {
	w := pmFork(t, "pm-selfkill")
	evs := pmFinished(t, w)
	pmNoErrors(t, w, evs)
	if st := evs[pmFind(evs, "exit")].Detail; st != "exit code 0" {
		t.Errorf("exit status %q, want exit code 0", st)
	}
	if !w.ExitedAfterDisconnect() {
		t.Errorf("ExitedAfterDisconnect() = false after Self().Kill(nil)")
	}
}
