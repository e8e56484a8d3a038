package hostpublish

import (
	"context"
	"slices"
	"time"
)

// slotLoop keeps one fast-path stream open: it picks a dns processor no
// other slot streams to, streams to it until it fails or leaves the view,
// and picks again.
func (p *Publisher) slotLoop(ctx context.Context, slot int) {
	defer p.wg.Done()
	for ctx.Err() == nil {
		addr := p.claim(slot)
		if addr == "" {
			t := time.NewTimer(p.o.Rescan)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		failed := p.stream(ctx, slot, addr)
		p.mu.Lock()
		delete(p.busy, addr)
		if failed {
			p.resting[addr] = time.Now().Add(2 * p.o.Rescan)
		}
		p.changedLocked()
		p.mu.Unlock()
	}
}

// claim picks the first processor in view that is neither streamed to by
// another slot nor resting after a failure. The slots start their search
// at different places, so they spread over the processors.
func (p *Publisher) claim(slot int) string {
	targets := slices.Clone(p.o.Targets())
	slices.Sort(targets)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, until := range p.resting {
		if now.After(until) {
			delete(p.resting, addr)
		}
	}
	for i := range targets {
		addr := targets[(i+slot)%len(targets)]
		if _, taken := p.busy[addr]; taken {
			continue
		}
		if _, resting := p.resting[addr]; resting {
			continue
		}
		p.busy[addr] = slot
		p.sent[slot] = 0
		return addr
	}
	return ""
}

// stream sends the newest record to addr whenever there is a newer one,
// until ctx ends, a send fails or addr leaves the view. It reports whether
// the stream failed.
func (p *Publisher) stream(ctx context.Context, slot int, addr string) (failed bool) {
	sink, err := p.o.Open(ctx, addr)
	if err != nil {
		p.log.Debug("dns processor stream not opened; trying another", "addr", addr, "err", err)
		return true
	}
	defer sink.Close()
	p.log.Debug("streaming host records", "dns", addr)
	t := time.NewTicker(p.o.Rescan)
	defer t.Stop()
	for {
		p.mu.Lock()
		rec, sent := p.latest, p.sent[slot]
		p.mu.Unlock()
		if rec != nil && rec.Seq > sent {
			if err := sink.Send(rec); err != nil {
				p.log.Info("dns processor stream failed; rotating", "addr", addr, "err", err)
				return true
			}
			p.mu.Lock()
			p.sent[slot] = rec.Seq
			p.changedLocked()
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return false
		case <-p.kickSinks[slot]:
		case <-t.C:
			if !slices.Contains(p.o.Targets(), addr) {
				return false
			}
		}
	}
}
