package events

import (
	"testing"

	"github.com/pktipc/pktipc/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
