package perf

import "time"

// epoch is the origin of Now. time.Since on a time.Time that carries a
// monotonic reading never goes backwards, whatever happens to the wall clock.
var epoch = time.Now()

// Now returns monotonic nanoseconds since an arbitrary origin fixed at
// process start. Differences between two calls are durations; values are not
// comparable between processes. Safe for concurrent use.
func Now() int64 { return int64(time.Since(epoch)) }
