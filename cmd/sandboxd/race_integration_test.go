//go:build integration

package main_test

import (
	"os"
	"strings"
	"sync"
)

// A daemon built with the race detector: make test-race.

// raceDaemon is set by SANDBOXD_RACE=1 (make test-race): the suite's
// sandboxd is built with the race detector, and a race it reports fails
// the suite.
var raceDaemon = os.Getenv("SANDBOXD_RACE") == "1"

// raceLogs are the outputs of every sandboxd the suite started. A daemon
// built with -race (SANDBOXD_RACE=1) writes its race reports there, goes
// on, and exits with status 66: TestMain fails the suite on any report,
// whether or not the test stopped its daemon and looked.
var raceLogs struct {
	sync.Mutex
	paths []string
}

// watchForRaces adds the log file of a sandboxd to those TestMain checks
// for race reports.
func watchForRaces(path string) {
	raceLogs.Lock()
	defer raceLogs.Unlock()
	raceLogs.paths = append(raceLogs.paths, path)
}

// racesReported are the race reports in the outputs of the daemons.
func racesReported() []string {
	raceLogs.Lock()
	defer raceLogs.Unlock()
	var races []string
	for _, path := range raceLogs.paths {
		log, _ := os.ReadFile(path)
		races = append(races, racesIn(string(log))...)
	}
	return races
}

// racesIn finds the race detector's reports in a log: from "WARNING: DATA
// RACE" to the line of "=" that ends it.
func racesIn(log string) []string {
	var races []string
	for {
		i := strings.Index(log, "WARNING: DATA RACE")
		if i < 0 {
			return races
		}
		log = log[i:]
		end := strings.Index(log, "\n==================")
		if end < 0 {
			end = len(log)
		}
		races = append(races, log[:end])
		log = log[end:]
	}
}
