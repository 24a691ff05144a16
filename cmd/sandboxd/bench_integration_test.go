//go:build integration

package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// benchSamples is how many runs each figure is the median and p95 of.
const benchSamples = 40

// BenchmarkLatency times a trivial program run bare on the host and through
// `sandboxctl execute`, interleaved so that both see the same machine, and
// prints p50, p95 and their ratios. Run it with `make bench`.
func BenchmarkLatency(b *testing.B) {
	ctl := filepath.Join(binDir, "sandboxctl")
	cases := []struct {
		name       string
		bare       []string
		lang, code string
	}{
		{"python print(1)", []string{"/usr/bin/python3", "-c", "print(1)"}, "python", "print(1)"},
		{"bash echo 1", []string{"/bin/bash", "-c", "echo 1"}, "bash", "echo 1"},
	}
	b.ResetTimer()
	for range b.N {
		fmt.Printf("\n%-18s %10s %10s %12s %12s %9s %9s\n", "program", "bare p50", "bare p95", "sandbox p50", "sandbox p95", "p50 ratio", "p95 ratio")
		for _, c := range cases {
			var bare, sbx []time.Duration
			for range benchSamples {
				bare = append(bare, timeRun(b, c.bare[0], c.bare[1:]...))
				sbx = append(sbx, timeRun(b, ctl, "--socket", socket, "execute", "-l", c.lang, "-c", c.code))
			}
			bp50, bp95 := percentile(bare, 50), percentile(bare, 95)
			sp50, sp95 := percentile(sbx, 50), percentile(sbx, 95)
			fmt.Printf("%-18s %10s %10s %12s %12s %8.1fx %8.1fx\n", c.name, ms(bp50), ms(bp95), ms(sp50), ms(sp95),
				float64(sp50)/float64(bp50), float64(sp95)/float64(bp95))
			b.ReportMetric(float64(sp50)/float64(bp50), c.lang+"-p50-ratio")
		}
	}
}

func timeRun(b *testing.B, name string, args ...string) time.Duration {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		b.Fatalf("%s %v: %v", name, args, err)
	}
	return time.Since(start)
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }
