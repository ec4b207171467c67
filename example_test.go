package clusternet_test

import (
	"fmt"
	"time"

	"github.com/clusternet-go/clusternet"
)

// A primary forks a worker, talks to it and disconnects it.
//
// A worker is the same program started again, with clusternet.IsWorker()
// true. Here the program is the test binary, whose worker side is chosen by
// the CLUSTERNET_TEST_HELPER variable given to Fork; the "pm-example-upper"
// worker is, in a program of your own:
//
//	if clusternet.IsWorker() {
//		self := clusternet.Self()
//		self.OnMessage(func(m clusternet.Message) {
//			var s string
//			m.Decode(&s)
//			self.Send(strings.ToUpper(s))
//		})
//		select {} // until the primary disconnects this worker
//	}
func ExampleFork() {
	w, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=pm-example-upper")
	if err != nil {
		fmt.Println(err)
		return
	}
	w.OnMessage(func(m clusternet.Message) {
		var s string
		if err := m.Decode(&s); err != nil {
			fmt.Println(err)
		}
		fmt.Printf("the worker says %q\n", s)
		w.Disconnect() // the worker closes its listeners and exits
	})
	w.OnExit(func(s clusternet.ExitStatus) {
		fmt.Printf("the worker left: %v, after disconnect: %v\n", s, w.ExitedAfterDisconnect())
	})
	if err := w.Send("hello, worker"); err != nil {
		fmt.Println(err)
		return
	}

	select {
	case <-w.Done(): // the exit handlers have run
	case <-time.After(20 * time.Second):
		fmt.Println("timed out")
		w.Kill(nil)
	}
	// Output:
	// the worker says "HELLO, WORKER"
	// the worker left: exit code 0, after disconnect: true
}

// Messages are encoded with encoding/json (or encoding/gob, with
// Settings.Serialization): each side decodes them into its own types.
//
// The "pm-example-sum" worker answers a job with the sum of its numbers:
//
//	clusternet.Self().OnMessage(func(m clusternet.Message) {
//		var job struct{ Numbers []int }
//		m.Decode(&job)
//		sum := 0
//		for _, n := range job.Numbers {
//			sum += n
//		}
//		clusternet.Self().Send(struct{ Count, Sum int }{len(job.Numbers), sum})
//	})
func ExampleWorker_Send() {
	type job struct{ Numbers []int }
	type result struct{ Count, Sum int }

	w, err := clusternet.Fork("CLUSTERNET_TEST_HELPER=pm-example-sum")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		w.Disconnect()
		select {
		case <-w.Done():
		case <-time.After(20 * time.Second):
			w.Kill(nil)
		}
	}()
	results := make(chan result, 3)
	w.OnMessage(func(m clusternet.Message) {
		var r result
		if err := m.Decode(&r); err != nil {
			fmt.Println(err)
		}
		results <- r
	})

	// Messages arrive in the order they are sent.
	for _, numbers := range [][]int{{1, 2, 3}, {10, 20}, {}} {
		if err := w.Send(job{Numbers: numbers}); err != nil {
			fmt.Println(err)
			return
		}
	}
	for range 3 {
		select {
		case r := <-results:
			fmt.Printf("%d numbers, sum %d\n", r.Count, r.Sum)
		case <-time.After(20 * time.Second):
			fmt.Println("timed out")
			return
		}
	}
	// Output:
	// 3 numbers, sum 6
	// 2 numbers, sum 30
	// 0 numbers, sum 0
}
