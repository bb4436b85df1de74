package bench

import (
	"fmt"
	"math"
	"time"
)

// FormatNS writes nanoseconds with a unit that keeps three significant
// digits: 850ns, 21.3µs, 1.25ms, 2.10s.
func FormatNS(ns float64) string {
	switch {
	case ns < 0:
		return "n/a"
	case ns < 1e3:
		return fmt.Sprintf("%.0fns", ns)
	case ns < 1e6:
		return sig3(ns/1e3) + "µs"
	case ns < 1e9:
		return sig3(ns/1e6) + "ms"
	}
	return sig3(ns/1e9) + "s"
}

// sig3 prints v (>= 1) with three significant digits.
func sig3(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// FormatRate writes a per-second rate: 950, 40.5k, 1.20M.
func FormatRate(v float64) string { return decimal(v, "", "k", "M", "G") }

// FormatBytesRate writes bytes per second in decimal units: 5.19 MB/s.
func FormatBytesRate(v float64) string {
	return decimal(v, " B/s", " kB/s", " MB/s", " GB/s")
}

// decimal writes v with three significant digits and the unit of its
// power of 1000 (units for 1, 1e3, 1e6 and 1e9).
func decimal(v float64, one, k, m, g string) string {
	switch {
	case v < 1e3:
		return fmt.Sprintf("%.0f", v) + one
	case v < 1e6:
		return sig3(v/1e3) + k
	case v < 1e9:
		return sig3(v/1e6) + m
	}
	return sig3(v/1e9) + g
}

// FormatRatio writes a ratio as "1.82x", or "—" when absent.
func FormatRatio(x *float64) string {
	if x == nil || math.IsNaN(*x) || math.IsInf(*x, 0) {
		return "—"
	}
	return fmt.Sprintf("%.2fx", *x)
}

func formatCount(x *float64) string {
	if x == nil {
		return "n/a"
	}
	switch {
	case *x >= 1e6:
		return sig3(*x/1e6) + "M"
	case *x >= 1e4:
		return sig3(*x/1e3) + "k"
	case *x >= 100:
		return fmt.Sprintf("%.0f", *x)
	}
	return fmt.Sprintf("%.2f", *x)
}

func formatDuration(d time.Duration) string {
	if d >= time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
