//go:build amd64 && !race

#include "textflag.h"

// func storeFenced(addr *uint64, v uint64)
TEXT ·storeFenced(SB), NOSPLIT, $0-16
	MOVQ addr+0(FP), AX
	MOVQ v+8(FP), BX
	MOVQ BX, 0(AX)
	// A locked no-op on the stack: a full fence, as XCHG would be.
	LOCK
	ORL $0, 0(SP)
	RET
