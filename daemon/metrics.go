package daemon

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are sandboxd's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg        *prometheus.Registry
	executions *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	oomKills   prometheus.Counter
	timeouts   prometheus.Counter
	// bodiesRefused counts request bodies refused: too_large (413),
	// budget (429) and timeout (408).
	bodiesRefused *prometheus.CounterVec
	// cellReuses counts the executions after which a cell stayed to
	// serve again; cellsDestroyed the cells destroyed after use, by why.
	cellReuses     prometheus.Counter
	cellsDestroyed *prometheus.CounterVec
	// requestErrors counts the requests answered with an error, by route
	// and status: the rate of 429 on POST /v1/execute says a node is
	// saturated.
	requestErrors *prometheus.CounterVec
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandboxd_executions_total", Help: "Executions that ran, by language and status.",
		}, []string{"language", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sandboxd_execution_duration_seconds", Help: "Wall-clock time of executions, by language.",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"language"}),
		oomKills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sandboxd_oom_kills_total", Help: "Executions killed by the kernel's OOM killer.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sandboxd_timeouts_total", Help: "Executions killed at their timeout.",
		}),
		bodiesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sandboxd_request_bodies_refused_total", Help: "Request bodies refused: too_large (413), budget (429: no room in server.max_body_memory in time), timeout (408).",
		}, []string{"reason"}),
	}
	m.cellReuses = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sandboxd_cell_reuses_total", Help: "One-shot executions after which their cell stayed to serve the same uid again.",
	})
	m.cellsDestroyed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sandboxd_cells_destroyed_total", Help: "Cells destroyed after use, by why: worn (pool.reuse executions), idle, age, timeout, limit (OOM or pids), leftover (a process left), memory, error, dead, stale, closing.",
	}, []string{"reason"})
	m.requestErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sandboxd_request_errors_total", Help: "Requests answered with an error, by route and HTTP status (429: no room to run or queue; 503: unavailable or draining).",
	}, []string{"route", "status"})
	for _, reason := range []string{"too_large", "budget", "timeout"} {
		m.bodiesRefused.WithLabelValues(reason)
	}
	// Present from the start, so that a rate over it has a first sample.
	m.requestErrors.WithLabelValues("POST /v1/execute", "429")
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.reg.MustRegister(m.executions, m.duration, m.oomKills, m.timeouts, m.bodiesRefused, m.cellReuses, m.cellsDestroyed, m.requestErrors,
		gauge("sandboxd_draining", "1 once a drain began (POST /v1/drain): no new executions or sessions are taken.", func() float64 {
			if draining, _ := s.drain.state(); draining {
				return 1
			}
			return 0
		}),
		gauge("sandboxd_cells_idle", "Used cells waiting for their uid's next execution.", func() float64 { return float64(s.idleCells()) }),
		gauge("sandboxd_executions_running", "Executions running now.", func() float64 {
			r, _ := s.slots.counts()
			return float64(r)
		}),
		gauge("sandboxd_queue_depth", "Executions waiting for a slot.", func() float64 {
			_, q := s.slots.counts()
			return float64(q)
		}),
		gauge("sandboxd_sessions", "Sessions alive.", func() float64 {
			s.smu.Lock()
			defer s.smu.Unlock()
			return float64(len(s.sessions))
		}),
		gauge("sandboxd_request_body_bytes", "Bytes of request bodies held in memory now, of server.max_body_memory.", func() float64 {
			return float64(s.bodies.held.Load())
		}),
		gauge("sandboxd_pool_ready", "Ready sandboxes in the pool.", func() float64 { return float64(s.poolReady()) }),
		gauge("sandboxd_pool_target", "Ready sandboxes the pools are to hold: pool.size for each pool.", func() float64 { return float64(s.poolTarget()) }),
		gauge("sandboxd_undeleted_sandboxes", "Sandboxes whose deletion failed (containerd away), deleted again once it answers.", func() float64 {
			n := 0
			s.undeleted.Range(func(_, _ any) bool { n++; return true })
			return float64(n)
		}),
		containerCollector{s},
		prometheus.NewGoCollector(),
		prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
	)
	return m
}

var (
	containersDesc = prometheus.NewDesc("sandboxd_containers", "Containers in containerd that sandboxd owns.", nil, nil)
	leakedDesc     = prometheus.NewDesc("sandboxd_leaked_containers", "Containers labelled as sandboxd's that it does not know: left by a crash, or planted.", nil, nil)
	upDesc         = prometheus.NewDesc("sandboxd_containerd_up", "1 when containerd answers.", nil, nil)
)

// containerCollector asks containerd at each scrape.
type containerCollector struct{ s *Server }

func (c containerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- containersDesc
	ch <- leakedDesc
	ch <- upDesc
}

func (c containerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A sandbox is known from before it exists until after it is gone;
	// one known before or after the list is not a leak (it was made or
	// deleted meanwhile).
	before := map[any]bool{}
	c.s.known.Range(func(id, _ any) bool { before[id] = true; return true })
	ids, err := c.s.rt.List(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1)
	leaked := 0
	for _, id := range ids {
		if _, ok := c.s.known.Load(id); !ok && !before[id] {
			leaked++
		}
	}
	ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(len(ids)))
	ch <- prometheus.MustNewConstMetric(leakedDesc, prometheus.GaugeValue, float64(leaked))
}

// MetricsHandler serves the metrics, for a TCP listener of their own.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}
