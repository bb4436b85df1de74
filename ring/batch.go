package ring

import "encoding/binary"

// Batches. A writer that sends many small messages pays, for each record
// that Reserve and Stage make, two atomic updates of the mapping's
// reference count; each waits for the stores before it (the record just
// written, on cache lines the reader last held) to reach the cache. A
// batch lays its records out in the writer's own memory first, and
// StageRecords copies them into the ring under one reference: the copies'
// stores overlap, and the reference count changes once per batch.

// RecordHeader is the size of a record's header, which AppendRecord puts
// before the payload: a little-endian uint32 payload length and a uint32
// of flags, whose top half (the seal that publishes a record in the ring)
// StageRecords fills in.
const RecordHeader = recordHeader

// RecordSize is how many bytes a record carrying n payload bytes takes in
// the ring and in a batch (AppendRecord): an eight-byte header and the
// payload, padded to eight bytes.
func RecordSize(n int) int { return int(recordSize(uint64(n))) }

// AppendRecord appends to batch a record carrying p, laid out as the ring
// lays records out: more says that the message continues in the next
// record, and mark sets the record's mark (Writer.Mark). StageRecords
// copies such records into a ring; each p must fit one record of it
// (MaxRecord).
func AppendRecord(batch, p []byte, more, mark bool) []byte {
	var flags uint32
	if more {
		flags |= flagMore
	}
	if mark {
		flags |= flagMark
	}
	batch = binary.LittleEndian.AppendUint64(batch, packRecord(uint32(len(p)), flags))
	batch = append(batch, p...)
	var pad [7]byte
	return append(batch, pad[:RecordSize(len(p))-recordHeader-len(p)]...)
}

// StageRecords copies whole records of batch (made by AppendRecord) into
// the ring, as many as there is room for now, and returns how many bytes
// of batch it took. The records are staged, as Stage leaves a record: the
// next Commit or Flush publishes them. It never waits: n < len(batch) with
// a nil error means the ring is full; wait for room for the next record
// (Spin, Arm) and call it again with the rest. A record that AppendRecord
// could not have made for this ring (longer than MaxRecord, cut short)
// gives ErrInvalid, with the records before it staged; the other errors
// are Reserve's. The owner goroutine calls it, with no reservation held.
func (w *Writer) StageRecords(batch []byte) (n int, err error) {
	if w.held >= 0 {
		return 0, ErrInvalid
	}
	if !w.s.life.acquire() {
		return 0, ErrClosed
	}
	defer w.s.release()
	limit := uint64(w.MaxRecord())
	for n < len(batch) {
		size, ok := batchRecord(batch[n:], limit)
		if !ok {
			return n, ErrInvalid
		}
		if ok, err := w.place(size - recordHeader); err != nil || !ok {
			return n, err
		}
		off := w.tail & w.s.mask
		toEnd := w.s.capacity - off
		// The run of whole records that fits before the end of the data
		// area and in the room known goes in one copy.
		room := min(toEnd, w.s.capacity-(w.tail-w.head))
		run := size
		for uint64(n)+run < uint64(len(batch)) {
			next, ok := batchRecord(batch[uint64(n)+run:], limit)
			if !ok || run+next > room {
				break // an invalid record is reported when its turn comes
			}
			run += next
		}
		// The headers copied carry no seal: each gets one below, the
		// same for the whole run, which lies in one lap. The first one's
		// word is not copied when nothing is staged before it: the reader
		// may be looking at that word, which must hold no header until
		// publish stores it (see seal).
		src, dst := batch[n:uint64(n)+run], w.s.data[off:off+run]
		first := w.tail == w.published
		if first {
			copy(dst[recordHeader:], src[recordHeader:])
		} else {
			copy(dst, src)
		}
		sealed := uint64(seal(w.tail, w.s.shift)) << 32
		for at := uint64(0); at < run; {
			h := binary.LittleEndian.Uint64(src[at:]) | sealed
			if at == 0 && first {
				w.hold = h
			} else {
				binary.LittleEndian.PutUint64(dst[at:], h)
			}
			size, _ := unpackRecord(h)
			at += recordSize(uint64(size))
		}
		w.tail += run
		n += int(run)
	}
	return n, nil
}

// batchRecord returns the size of the record at the start of b, a batch
// the owner built, and whether it is one AppendRecord could have made for
// a ring whose records carry at most limit bytes.
func batchRecord(b []byte, limit uint64) (uint64, bool) {
	if len(b) < recordHeader {
		return 0, false
	}
	n, flags := unpackRecord(binary.LittleEndian.Uint64(b))
	size := recordSize(uint64(n))
	if uint64(n) > limit || flags&^(flagMore|flagMark) != 0 || size > uint64(len(b)) {
		return 0, false
	}
	return size, true
}
