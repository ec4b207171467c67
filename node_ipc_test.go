package clusternet

// The Node line parser's fast paths against encoding/json.

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestNodeIPCFastPaths(t *testing.T) {
	for _, line := range []string{
		`{"cmd":"NODE_HANDLE_ACK"}`,
		`{"cmd":"NODE_CLUSTER","ack":1,"accepted":true,"seq":2}`,
		`{"cmd":"NODE_CLUSTER","ack":0,"accepted":false,"seq":123456789012345}`,
		`{"cmd":"NODE_CLUSTER","ack":01,"accepted":true,"seq":2}`,
		`{"cmd":"NODE_CLUSTER","ack":1,"accepted":true,"seq":2} `,
		`{"cmd":"NODE_CLUSTER","ack":1,"accepted":true,"seq":-2}`,
		`{"cmd":"NODE_CLUSTER","ack":1,"accepted":1,"seq":2}`,
		`{"cmd":"NODE_CLUSTER","ack":1.5,"accepted":true,"seq":2}`,
		`{"cmd":"NODE_CLUSTER","ack":1,"accepted":true,"seq":2,"x":1}`,
	} {
		got, gotInternal, gotErr := parseNodeLine([]byte(line))
		var want nodeMsg
		wantErr := json.Unmarshal([]byte(line), &want)
		if (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s: error %v, encoding/json says %v", line, gotErr, wantErr)
			continue
		}
		if wantErr == nil && (!reflect.DeepEqual(got, want) || !gotInternal) {
			t.Errorf("%s: %+v (internal %v), encoding/json says %+v", line, got, gotInternal, want)
		}
	}
}
