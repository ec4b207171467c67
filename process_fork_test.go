package clusternet

// What Fork gives a worker: its environment, its directory, the settings;
// and a process that was not forked.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func init() {
	// pm-nochannel runs with CLUSTERNET_WORKER_ID set by hand and no
	// channel; it prints what the package tells it, as JSON, on stdout.
	helpers["pm-nochannel"] = func() {
		self := Self()
		r := pmNoChannel{IsWorker: IsWorker(), HasSelf: self != nil}
		if self != nil {
			err := self.Send("anyone there?")
			r.SendErr = fmt.Sprint(err)
			r.SendNoChannel = errors.Is(err, ErrNoChannel)
			r.DisconnectNoChannel = errors.Is(self.Disconnect(), ErrNoChannel)
			r.KillNoChannel = errors.Is(self.Kill(nil), ErrNoChannel)
			_, err = Listen("tcp", "127.0.0.1:0")
			r.ListenNoChannel = errors.Is(err, ErrNoChannel)
			r.Connected = self.IsConnected()
			_, r.EnvLeft = os.LookupEnv(envWorkerID)
		}
		json.NewEncoder(os.Stdout).Encode(r)
	}
}

type pmNoChannel struct {
	IsWorker, HasSelf   bool
	SendErr             string
	SendNoChannel       bool
	DisconnectNoChannel bool
	KillNoChannel       bool
	ListenNoChannel     bool
	Connected           bool
	EnvLeft             bool
}

// Fork(env) adds to and overrides the primary's environment and
// Settings.Env.
func TestProcessForkEnv(t *testing.T) {
	t.Setenv("PM_INHERITED", "from the primary")
	t.Setenv("PM_OVERRIDDEN", "from the primary")
	withSettings(t, Settings{Env: []string{"PM_SETTINGS=settings", "PM_BOTH=settings", "PM_OVERRIDDEN=settings"}})
	w := fork(t, "pm-info", "PM_BOTH=fork", "PM_FORK=fork", "PM_EMPTY=")
	keys := []string{"PM_INHERITED", "PM_OVERRIDDEN", "PM_SETTINGS", "PM_BOTH", "PM_FORK", "PM_EMPTY", "PM_UNSET"}
	info := ask[pmInfo](t, w, messages(w), keys)
	want := map[string]string{
		"PM_INHERITED":  "from the primary",
		"PM_OVERRIDDEN": "settings",
		"PM_SETTINGS":   "settings",
		"PM_BOTH":       "fork",
		"PM_FORK":       "fork",
		"PM_EMPTY":      "",
	}
	if diff := cmp.Diff(want, info.Env); diff != "" {
		t.Errorf("worker environment (-want +got):\n%s", diff)
	}

	for _, bad := range []string{"NOEQUALS", "=value"} {
		before := Workers()
		if w, err := Fork(bad); err == nil {
			reap(t, w)
			t.Errorf("Fork(%q) succeeded", bad)
		} else if got := Workers(); !slices.Equal(got, before) {
			t.Errorf("Fork(%q) failed but Workers() changed", bad)
		}
	}
}

// Settings.Dir is the worker's working directory (Node's cwd).
func TestProcessDir(t *testing.T) {
	dir := testTempDir(t)
	withSettings(t, Settings{Dir: dir})
	w := fork(t, "pm-info")
	info := ask[pmInfo](t, w, messages(w), []string{})
	want, _ := filepath.EvalSymlinks(dir)
	got, _ := filepath.EvalSymlinks(info.Cwd)
	if got != want || got == "" {
		t.Errorf("worker cwd = %q, want %q", info.Cwd, dir)
	}
}

// A bad Dir or Exec makes Fork fail with the start error, and no worker.
func TestProcessForkStartError(t *testing.T) {
	for _, s := range []Settings{
		{Dir: filepath.Join(testTempDir(t), "missing")},
		{Exec: filepath.Join(testTempDir(t), "no-such-program")},
	} {
		withSettings(t, s)
		before := Workers()
		w, err := Fork(envHelper + "=idle")
		if err == nil {
			reap(t, w)
			t.Errorf("Fork with %+v succeeded", s)
			continue
		}
		if s.Exec != "" && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Fork with Exec %q: %v, want an error that is os.ErrNotExist", s.Exec, err)
		}
		if !slices.Equal(Workers(), before) {
			t.Errorf("a failed Fork changed Workers()")
		}
	}
}

// CurrentSettings has the defaults filled in; a refused SetupPrimary
// changes nothing.
func TestProcessCurrentSettingsDefaults(t *testing.T) {
	withSettings(t, Settings{})
	s := CurrentSettings()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if s.Exec != exe {
		t.Errorf("default Exec = %q, want os.Executable() %q", s.Exec, exe)
	}
	if !slices.Equal(s.Args, os.Args[1:]) || s.Args == nil {
		t.Errorf("default Args = %q, want os.Args[1:] %q", s.Args, os.Args[1:])
	}
	if s.Serialization != JSON || s.MaxMessageSize != DefaultMaxMessageSize || s.Dir != "" || s.Silent || s.Env != nil {
		t.Errorf("defaults: Serialization %v, MaxMessageSize %d, Dir %q, Silent %v, Env %q", s.Serialization, s.MaxMessageSize, s.Dir, s.Silent, s.Env)
	}
	if err := SetupPrimary(Settings{Env: []string{"NOT A KEY VALUE"}, Dir: "/changed"}); err == nil {
		t.Errorf("SetupPrimary with a malformed Env entry succeeded")
	}
	if got := CurrentSettings().Dir; got != "" {
		t.Errorf("a refused SetupPrimary changed Dir to %q", got)
	}
}

// A process with CLUSTERNET_WORKER_ID set that was not forked by a
// primary reports ErrNoChannel, clearly, instead of hanging.
func TestProcessNoChannel(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"no channel", []string{envWorkerID + "=1"}},
		{"channel not open", []string{envWorkerID + "=1", envChannel + "=987"}},
		{"channel not a number", []string{envWorkerID + "=1", envChannel + "=pipe"}},
		{"bad id", []string{envWorkerID + "=first", envChannel + "=987"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			cmd := selfCommand(ctx, t, append([]string{envHelper + "=pm-nochannel"}, tc.env...)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("worker without a channel: %v (ctx: %v); stderr:\n%s", err, ctx.Err(), stderr.Bytes())
			}
			var r pmNoChannel
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("worker's report %q: %v", out, err)
			}
			if !r.HasSelf {
				t.Fatalf("Self() is nil in a process with %s set", envWorkerID)
			}
			if !r.SendNoChannel || !r.DisconnectNoChannel || !r.KillNoChannel || !r.ListenNoChannel {
				t.Errorf("want ErrNoChannel from Send %v, Disconnect %v, Kill %v, Listen %v", r.SendNoChannel, r.DisconnectNoChannel, r.KillNoChannel, r.ListenNoChannel)
			}
			if !strings.Contains(r.SendErr, envWorkerID) {
				t.Errorf("Send error %q does not say which variable is wrong", r.SendErr)
			}
			if r.Connected || r.EnvLeft {
				t.Errorf("IsConnected() = %v, %s still set: %v", r.Connected, envWorkerID, r.EnvLeft)
			}
		})
	}
}
