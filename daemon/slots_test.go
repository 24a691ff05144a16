package daemon

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// Requests queued for a run slot get it in order of arrival; one whose
// client leaves gives up its place.
func TestSlotsAreFIFO(t *testing.T) {
	q := newSlots(Limits{MaxConcurrent: 1, MaxQueued: 10})
	ctx := context.Background()
	first, err := q.acquireSlot(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	waitQueued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for _, queued := q.counts(); queued != n; _, queued = q.counts() {
			if time.Now().After(deadline) {
				t.Fatalf("%d queued, want %d", queued, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	order := make(chan int, 5)
	leaving, leave := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := ctx
			if i == 2 {
				c = leaving
			}
			tk, err := q.acquireSlot(c, uint32(i))
			if err != nil {
				return
			}
			order <- i
			tk.release()
		}()
		waitQueued(i + 1)
	}
	leave()
	waitQueued(4)
	first.release()
	wg.Wait()
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	if !slices.Equal(got, []int{0, 1, 3, 4}) {
		t.Errorf("slots went in order %v, want [0 1 3 4]", got)
	}
	if running, queued := q.counts(); running != 0 || queued != 0 {
		t.Errorf("after: %d running, %d queued", running, queued)
	}
}
