package perf

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where the figures were taken: CPUs, CPU model and Go
// version, for BENCHMARKS.md.
func Machine() string {
	model := "unknown CPU"
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return strconv.Itoa(runtime.NumCPU()) + " CPUs, " + model + ", " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH
}
