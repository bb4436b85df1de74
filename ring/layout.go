package ring

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// The header page. Each word that one side writes often sits on its own
// cache line, so that the two sides do not invalidate each other's lines
// on every record.
const (
	offMagic    = 0                     // uint64 magic: a ring of this layout
	offCapacity = 8                     // uint64 data-area size, informational only
	offReserved = 1 * 64                // unused: records publish themselves (seal)
	offHead     = 2 * 64                // uint64 written by the reader: end of released records
	offRPark    = 3 * 64                // uint32 futex word: 1 while the reader is parked
	offWPark    = 4 * 64                // uint32 futex word: 1 while the writer is parked
	offClosed   = 5 * 64                // uint32 closedWriter | closedReader
	headerSize  = 4096                  // the data area starts on the next page
	magic       = 0x5054_4b52_494e_4732 // identifies this layout ("PTKRING2")
)

// Closed flags in the shared header.
const (
	closedWriter = 1 << iota
	closedReader
)

// Capacity bounds for the data area.
const (
	// MinCapacity is the smallest data area: one page.
	MinCapacity = 4096
	// MaxCapacity is the largest data area: 1 GiB.
	MaxCapacity = 1 << 30
)

// Records.
const (
	recordHeader = 8 // uint32 length, uint32 flags (the top half: the seal), little-endian

	flagMore = 1 // the message continues in the next record
	flagPad  = 2 // filler up to the end of the data area; no payload
	flagMark = 4 // the writer marked the record (Writer.Mark); its meaning is the users'

	// sealMask is the part of a header's flags word that holds its seal.
	sealMask = 0xffff_0000
)

// seal is the mark a record header at position pos carries in the top
// half of its flags word once it is published, for a data area of
// 1<<shift bytes: the lap of the position, with the top bit set. A
// header is the record's publication: the reader takes the record at its
// head once the word there carries that position's seal. What else the
// word there can hold is zero (the writer clears the word after its last
// published record, where it is free, before it publishes), or, in a
// full ring, the header of the record one lap before, whose seal differs;
// so no stale word passes for a record.
func seal(pos uint64, shift uint8) uint32 { return (uint32(pos>>shift)&0x7fff | 0x8000) << 16 }

// recordSize is the bytes a record with an n-byte payload takes, padded
// to eight. n is at most MaxCapacity, so this does not overflow.
func recordSize(n uint64) uint64 { return (recordHeader + n + 7) &^ 7 }

// maxRecord is the largest payload of one record in a data area of
// capacity bytes: half the area, so that a record always fits once the
// area has drained, even after a padding record.
func maxRecord(capacity uint64) int { return int(capacity/2 - recordHeader) }

// validCapacity reports whether c is a power of two within bounds.
func validCapacity(c uint64) bool {
	return c >= MinCapacity && c <= MaxCapacity && c&(c-1) == 0
}

// word64 and word32 view an aligned word of the mapping as an atomic.
// off must be a multiple of the word's size within mem.
func word64(mem []byte, off uint64) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

func word32(mem []byte, off uint64) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

// initHeader writes a fresh header for a data area of capacity bytes.
func initHeader(hdr []byte, capacity uint64) {
	binary.LittleEndian.PutUint64(hdr[offMagic:], magic)
	binary.LittleEndian.PutUint64(hdr[offCapacity:], capacity)
}

// packRecord and unpackRecord convert a record header to and from the
// uint64 stored (atomically) at the record's start.
func packRecord(n uint32, flags uint32) uint64 { return uint64(n) | uint64(flags)<<32 }

func unpackRecord(h uint64) (n uint32, flags uint32) { return uint32(h), uint32(h >> 32) }
