//go:build amd64 && !purego

#include "textflag.h"

// func foldAVX512(crc uint32, p []byte, keys *[6]uint64) uint32
//
// Sixteen 128-bit lanes (four ZMM registers) hold consecutive 16-byte
// chunks of p. Each step replaces a lane L by L.lo*k.lo ^ L.hi*k.hi, which
// is L moved 256 bytes forward modulo the polynomial, xored with the chunk
// 256 bytes later. The registers are then folded into one (64 bytes
// forward), its four lanes into one (16 bytes forward), which absorbs the
// remaining chunks. The last 128-bit value is congruent to the input so
// far, so its CRC from 0, continued over the last 0-15 bytes with the CRC32
// instruction, is the result.
TEXT ·foldAVX512(SB), NOSPLIT, $0-44
	MOVL            crc+0(FP), AX
	MOVQ            p_base+8(FP), SI
	MOVQ            p_len+16(FP), CX
	MOVQ            keys+32(FP), DX
	VBROADCASTI32X4 0(DX), Z0
	VBROADCASTI32X4 16(DX), Z15
	VMOVDQU         32(DX), X14

	// The initial CRC is xored into the first four bytes.
	VMOVQ     AX, X5
	VMOVDQU64 0(SI), Z1
	VMOVDQU64 64(SI), Z2
	VMOVDQU64 128(SI), Z3
	VMOVDQU64 192(SI), Z4
	VPXORQ    Z5, Z1, Z1
	ADDQ      $256, SI
	SUBQ      $256, CX

loop256:
	CMPQ       CX, $256
	JB         merge
	VPCLMULQDQ $0x00, Z0, Z1, Z5
	VPCLMULQDQ $0x00, Z0, Z2, Z6
	VPCLMULQDQ $0x00, Z0, Z3, Z7
	VPCLMULQDQ $0x00, Z0, Z4, Z8
	VPCLMULQDQ $0x11, Z0, Z1, Z1
	VPCLMULQDQ $0x11, Z0, Z2, Z2
	VPCLMULQDQ $0x11, Z0, Z3, Z3
	VPCLMULQDQ $0x11, Z0, Z4, Z4
	VMOVDQU64  0(SI), Z9
	VMOVDQU64  64(SI), Z10
	VMOVDQU64  128(SI), Z11
	VMOVDQU64  192(SI), Z12
	VPTERNLOGQ $0x96, Z9, Z5, Z1 // Z1 ^= Z5 ^ Z9
	VPTERNLOGQ $0x96, Z10, Z6, Z2
	VPTERNLOGQ $0x96, Z11, Z7, Z3
	VPTERNLOGQ $0x96, Z12, Z8, Z4
	ADDQ       $256, SI
	SUBQ       $256, CX
	JMP        loop256

merge:
	// Z1 into Z2, Z2 into Z3, Z3 into Z4: 64 bytes forward.
	VPCLMULQDQ $0x00, Z15, Z1, Z5
	VPCLMULQDQ $0x11, Z15, Z1, Z1
	VPXORQ     Z5, Z1, Z1
	VPXORQ     Z1, Z2, Z2
	VPCLMULQDQ $0x00, Z15, Z2, Z5
	VPCLMULQDQ $0x11, Z15, Z2, Z2
	VPXORQ     Z5, Z2, Z2
	VPXORQ     Z2, Z3, Z3
	VPCLMULQDQ $0x00, Z15, Z3, Z5
	VPCLMULQDQ $0x11, Z15, Z3, Z3
	VPXORQ     Z5, Z3, Z3
	VPXORQ     Z3, Z4, Z4

loop64:
	CMPQ       CX, $64
	JB         lanes
	VPCLMULQDQ $0x00, Z15, Z4, Z5
	VPCLMULQDQ $0x11, Z15, Z4, Z4
	VMOVDQU64  0(SI), Z9
	VPTERNLOGQ $0x96, Z9, Z5, Z4
	ADDQ       $64, SI
	SUBQ       $64, CX
	JMP        loop64

lanes:
	// The four lanes of Z4, earliest in X4, into one: 16 bytes forward.
	VEXTRACTI32X4 $1, Z4, X1
	VEXTRACTI32X4 $2, Z4, X2
	VEXTRACTI32X4 $3, Z4, X3
	VPCLMULQDQ    $0x00, X14, X4, X5
	VPCLMULQDQ    $0x11, X14, X4, X4
	VPXOR         X5, X4, X4
	VPXOR         X4, X1, X1
	VPCLMULQDQ    $0x00, X14, X1, X5
	VPCLMULQDQ    $0x11, X14, X1, X1
	VPXOR         X5, X1, X1
	VPXOR         X1, X2, X2
	VPCLMULQDQ    $0x00, X14, X2, X5
	VPCLMULQDQ    $0x11, X14, X2, X2
	VPXOR         X5, X2, X2
	VPXOR         X2, X3, X3

loop16:
	CMPQ       CX, $16
	JB         done
	VPCLMULQDQ $0x00, X14, X3, X5
	VPCLMULQDQ $0x11, X14, X3, X3
	VMOVDQU    0(SI), X9
	VPXOR      X5, X3, X3
	VPXOR      X9, X3, X3
	ADDQ       $16, SI
	SUBQ       $16, CX
	JMP        loop16

done:
	VMOVQ      X3, BX
	VPEXTRQ    $1, X3, DI
	VZEROUPPER
	XORL       AX, AX
	CRC32Q     BX, AX
	CRC32Q     DI, AX

	// The last 0-15 bytes.
tail8:
	CMPQ   CX, $8
	JB     tail1
	CRC32Q (SI), AX
	ADDQ   $8, SI
	SUBQ   $8, CX
	JMP    tail8

tail1:
	TESTQ  CX, CX
	JZ     ret
	CRC32B (SI), AX
	INCQ   SI
	DECQ   CX
	JMP    tail1

ret:
	MOVL AX, ret+40(FP)
	RET
