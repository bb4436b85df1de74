#include "textflag.h"

// func prefetchWrite(p *byte, n uintptr)
TEXT ·prefetchWrite(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX
	ADDQ AX, CX
loop:
	CMPQ AX, CX
	JAE done
	// PREFETCHW (AX), which the assembler does not know.
	BYTE $0x0F; BYTE $0x0D; BYTE $0x08
	ADDQ $64, AX
	JMP loop
done:
	RET

// func prefetchRead(p *byte, n uintptr)
TEXT ·prefetchRead(SB), NOSPLIT, $0-16
	MOVQ p+0(FP), AX
	MOVQ n+8(FP), CX
	ADDQ AX, CX
rloop:
	CMPQ AX, CX
	JAE rdone
	PREFETCHT0 (AX)
	ADDQ $64, AX
	JMP rloop
rdone:
	RET
