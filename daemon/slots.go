package daemon

import (
	"container/list"
	"context"
	"sync"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// slots bounds the executions that run at once, those that wait, and
// those of one uid. It counts them under one lock, so that a request never
// sees a full queue that is only a waiter on its way to a free slot, and
// its bounds can change while executions run (on reload).
type slots struct {
	mu                        sync.Mutex
	maxRun, maxQueued, perUID int
	running, inflight         int
	byUID                     map[uint32]int
	// waiting holds the queued requests in order of arrival: a freed slot
	// goes to the first, so that under load latency grows evenly instead
	// of some requests being overtaken again and again.
	waiting list.List // of chan struct{}, closed when given a slot
}

func newSlots(l Limits) *slots {
	q := &slots{byUID: map[uint32]int{}}
	q.resize(l)
	return q
}

// resize applies new bounds; executions already running keep running.
func (q *slots) resize(l Limits) {
	q.mu.Lock()
	q.maxRun, q.maxQueued, q.perUID = l.MaxConcurrent, l.MaxQueued, l.MaxConcurrentPerUID
	q.grant()
	q.mu.Unlock()
}

// grant gives the free slots to the first requests waiting. Called with mu.
func (q *slots) grant() {
	for q.running < q.maxRun && q.waiting.Len() > 0 {
		w := q.waiting.Remove(q.waiting.Front()).(chan struct{})
		q.running++
		close(w)
	}
}

var errBusy = api.Errorf(api.CodeResourceExhausted, "too many executions running and queued; try again later")

// ticket is a request's place: it leaves the count of requests once
// answered, and frees its run slot once its sandbox is torn down.
type ticket struct {
	q        *slots
	uid      uint32
	answered sync.Once
}

// answer takes the request out of the count: its client may send another.
func (t *ticket) answer() { t.answered.Do(func() { t.q.leave(t.uid) }) }

// release frees the run slot.
func (t *ticket) release() {
	t.answer()
	t.q.mu.Lock()
	t.q.running--
	t.q.grant()
	t.q.mu.Unlock()
}

// acquireSlot takes a run slot for an execution of uid, waiting in line
// while every slot is taken; a full queue, or uid's full quota, refuses it
// at once.
func (q *slots) acquireSlot(ctx context.Context, uid uint32) (*ticket, error) {
	q.mu.Lock()
	if q.inflight >= q.maxRun+q.maxQueued {
		q.mu.Unlock()
		return nil, errBusy
	}
	if q.perUID > 0 && q.byUID[uid] >= q.perUID {
		q.mu.Unlock()
		return nil, api.Errorf(api.CodeResourceExhausted, "uid %d has its quota of %d executions running or queued", uid, q.perUID)
	}
	q.inflight++
	q.byUID[uid]++
	if q.running < q.maxRun && q.waiting.Len() == 0 {
		q.running++
		q.mu.Unlock()
		return &ticket{q: q, uid: uid}, nil
	}
	w := make(chan struct{})
	e := q.waiting.PushBack(w)
	q.mu.Unlock()
	select {
	case <-w:
		return &ticket{q: q, uid: uid}, nil
	case <-ctx.Done():
		q.mu.Lock()
		select {
		case <-w: // given a slot meanwhile: it goes to the next
			q.running--
			q.grant()
		default:
			q.waiting.Remove(e)
		}
		q.mu.Unlock()
		q.leave(uid)
		return nil, ctx.Err()
	}
}

func (q *slots) leave(uid uint32) {
	q.mu.Lock()
	q.inflight--
	if q.byUID[uid]--; q.byUID[uid] <= 0 {
		delete(q.byUID, uid)
	}
	q.mu.Unlock()
}

func (q *slots) counts() (running, queued int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.running, max(q.inflight-q.running, 0)
}
