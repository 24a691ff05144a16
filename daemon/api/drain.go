package api

// DrainResult is the answer to POST /v1/drain.
type DrainResult struct {
	// Drained is true when no execution or session creation that the
	// daemon took before the drain is still under way; false when the
	// wait ended first.
	Drained bool `json:"drained"`
	// Running is how many of those were still under way at the answer.
	Running int `json:"running"`
	// Sessions are the sessions alive: a drain keeps them, for the next
	// daemon to adopt.
	Sessions int `json:"sessions"`
	// WaitedMS is how long the request waited for the running ones.
	WaitedMS int64 `json:"waited_ms"`
}
