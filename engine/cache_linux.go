package engine

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// lastLevelCache returns the size in bytes of the highest-level cache of
// the first processor, as sysfs describes it.
func lastLevelCache() (int64, error) {
	best, size := 0, int64(0)
	for i := 0; ; i++ {
		dir := fmt.Sprintf("/sys/devices/system/cpu/cpu0/cache/index%d/", i)
		lv, err := os.ReadFile(dir + "level")
		if err != nil {
			break
		}
		sz, err := os.ReadFile(dir + "size")
		if err != nil {
			continue
		}
		level, err1 := strconv.Atoi(strings.TrimSpace(string(lv)))
		n, err2 := parseCacheSize(string(sz))
		if err1 != nil || err2 != nil || level < best {
			continue
		}
		best, size = level, n
	}
	if size == 0 {
		return 0, errors.ErrUnsupported
	}
	return size, nil
}
