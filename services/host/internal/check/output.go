package check

import "unicode/utf8"

// truncationMark ends output that was cut to the limit.
const truncationMark = "\n…(truncated)"

// truncate cuts s to at most limit bytes, on a rune boundary, marking the
// cut.
func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	keep := max(limit-len(truncationMark), 0)
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + truncationMark
}

// tailBuffer keeps the last limit bytes written to it: the end of a
// program's output is where it says why it failed. It is used by one
// writer at a time (os/exec copies stdout and stderr from one goroutine
// when both are the same writer).
type tailBuffer struct {
	limit int
	buf   []byte
	cut   bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > b.limit {
		p = p[len(p)-b.limit:]
		b.buf = b.buf[:0]
		b.cut = true
	}
	if over := len(b.buf) + len(p) - b.limit; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.cut = true
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

// String is the kept output, prefixed with a mark when the start was cut,
// within limit bytes in all.
func (b *tailBuffer) String() string {
	if !b.cut {
		return string(b.buf)
	}
	const mark = "(truncated)…\n"
	s := b.buf
	if drop := len(mark) + len(s) - b.limit; drop > 0 {
		s = s[min(drop, len(s)):]
	}
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return mark + string(s)
}
