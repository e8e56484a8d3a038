package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// soa succeeds once the dns processor at addr answers its zone's SOA: it
// has bootstrapped.
func soa(addr string) error {
	r, err := ask(addr, "hive.", dns.TypeSOA)
	if err == nil && r.Rcode != dns.RcodeSuccess {
		err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	return err
}

// answers reports whether addr answers host h's A record with change id
// at least want (a later change of the same host counts too).
func answers(addr string, h *simHost, want uint32) bool {
	r, err := ask(addr, h.name+".node.hive.", dns.TypeA)
	if err != nil || len(r.Answer) == 0 {
		return false
	}
	a, ok := r.Answer[0].(*dns.A)
	return ok && seqOf(a) >= uint64(want)
}

// sweep asks addr for every host's A record (32 queries at a time) and
// returns how many hosts do not answer their current address.
func sweep(addr string, hosts []*simHost) int {
	var missing atomic.Int64
	next := make(chan *simHost)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for h := range next {
				c, _ := h.current()
				if !answers(addr, h, c) {
					missing.Add(1)
				}
			}
		}()
	}
	for _, h := range hosts {
		next <- h
	}
	close(next)
	wg.Wait()
	return int(missing.Load())
}

// waitServed sweeps until addr answers every host; it returns when the
// passing sweep ended (zero if none passed within limit) and the hosts
// missing from the last sweep.
func (f *fleet) waitServed(addr string, hosts []*simHost, limit time.Duration) (time.Time, int) {
	deadline := time.Now().Add(limit)
	for {
		m := sweep(addr, hosts)
		if m == 0 {
			return time.Now(), 0
		}
		if time.Now().After(deadline) {
			return time.Time{}, m
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// probe measures one change's propagation: it asks both dns processors
// until each answers the change (first every 2 ms, then every tenth of
// the time elapsed, at most every second, so that slow propagation does
// not turn the probes into the load) and returns when the slower one did,
// or false after limit.
func (f *fleet) probe(h *simHost, change uint32, sent time.Time, limit time.Duration) (time.Duration, bool) {
	done := make([]bool, len(f.dnsUDP))
	var last time.Time
	for {
		all := true
		for i, a := range f.dnsUDP {
			if !done[i] {
				if answers(a, h, change) {
					done[i], last = true, time.Now()
				} else {
					all = false
				}
			}
		}
		if all {
			return last.Sub(sent), true
		}
		el := time.Since(sent)
		if el > limit {
			return el, false
		}
		time.Sleep(min(max(2*time.Millisecond, el/10), time.Second))
	}
}

// churn changes ChurnRate records per second (an address each) and fails
// FailPerMin hosts a minute (every service critical), each recovering 30 s
// later, for d. With measure, every change is probed and the propagation
// returned.
func (f *fleet) churn(ctx context.Context, d time.Duration, measure bool) (lat []time.Duration, changes, missing int, errs int64) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(2*f.cfg.ChurnRate))
	defer tick.Stop()
	var failTick <-chan time.Time
	if f.cfg.FailPerMin > 0 {
		ft := time.NewTicker(time.Minute / time.Duration(f.cfg.FailPerMin))
		defer ft.Stop()
		failTick = ft.C
	}
	var errCount atomic.Int64
	begin := time.Now()
	end := begin.Add(d)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return
		case <-failTick:
			h := f.pick(1)[0]
			c, failed := h.current()
			if failed {
				continue
			}
			if _, err := h.set(c, true); err != nil {
				errCount.Add(1)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(30 * time.Second)
				c, _ := h.current()
				if _, err := h.set(c, false); err != nil {
					errCount.Add(1)
				}
			}()
		case <-tick.C:
			// Paced by the clock, not by ticks, which a loaded machine
			// drops: every change due by now is made.
			for changes < int(time.Since(begin)*time.Duration(f.cfg.ChurnRate)/time.Second) {
				h := f.pick(1)[0]
				_, failed := h.current()
				change := f.change.Add(1)
				sent := time.Now()
				if _, err := h.set(change, failed); err != nil {
					errCount.Add(1)
					break
				}
				changes++
				if !measure {
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					l, ok := f.probe(h, change, sent, 30*time.Second)
					mu.Lock()
					defer mu.Unlock()
					if ok {
						lat = append(lat, l)
					} else {
						missing++
					}
				}()
			}
		}
	}
	wg.Wait()
	return lat, changes, missing, errCount.Load()
}

// churnPhase is the steady churn, with dns.propagation measured on every
// change; the first dns processor is profiled for 30 s in the middle.
func (f *fleet) churnPhase(ctx context.Context) error {
	var prof sync.WaitGroup
	if f.cfg.Profile != "" {
		prof.Add(1)
		go func() {
			defer prof.Done()
			time.Sleep(min(f.cfg.Churn/4, 30*time.Second))
			secs := int(min(f.cfg.Churn/2, 30*time.Second).Seconds())
			if err := fetchProfile("http://"+f.dnsHTTP[0]+fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs), f.cfg.Profile); err != nil {
				fmt.Fprintf(os.Stderr, "dns processor profile: %v\n", err)
			}
		}()
	}
	start := time.Now()
	lat, changes, missing, errs := f.churn(ctx, f.cfg.Churn, true)
	el := time.Since(start)
	prof.Wait()
	r := summarize(lat)
	r.Name, r.Clients, r.Seconds = "fleet.dns.propagation", len(f.dnsUDP), el.Seconds()
	r.OpsPerSec, r.Errors = float64(changes)/el.Seconds(), errs+int64(missing)
	r.Note = fmt.Sprintf("during churn: %d record changes at %d/s + %d failures/min (recovering after 30s) for %s; publish → both dns processors answer the new address (fast path + durable path); %d changes never answered within 30s",
		changes, f.cfg.ChurnRate, f.cfg.FailPerMin, f.cfg.Churn, missing)
	f.add(r)
	return nil
}

func fetchProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	_, err = io.Copy(out, resp.Body)
	return err
}

// status asks one control-plane member for its status.
func (f *fleet) status(ctx context.Context, ep string) (*hivemindv1.StatusResponse, error) {
	c, err := cpclient.New(cpclient.Config{Endpoints: []string{ep}, Dial: dialConfig(), MaxAttempts: 1})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return c.Status(cctx)
}

// cpRestart stops a follower, churns for 10 s without it, starts it and
// measures until it answers and until it has applied what the leader had.
func (f *fleet) cpRestart(ctx context.Context) error {
	var leader string
	for _, ep := range f.cps {
		if st, err := f.status(ctx, ep); err == nil && st.GetLeaderId() != 0 {
			leader = st.GetLeaderName()
			break
		}
	}
	victim := 0
	for i := range 3 {
		if fmt.Sprintf("cp%d", i+1) != leader {
			victim = i
			break
		}
	}
	name := fmt.Sprintf("hivemind-cp%d", victim+1)
	i := f.stop(name)
	_, changes, _, _ := f.churn(ctx, 10*time.Second, false)
	var target int64
	for j, ep := range f.cps {
		if j == victim {
			continue
		}
		if st, err := f.status(ctx, ep); err == nil {
			target = max(target, st.GetAppliedRevision())
		}
	}
	start, err := f.p.startAgain(i)
	if err != nil {
		return err
	}
	var answered, caught time.Duration
	deadline := start.Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		st, err := f.status(ctx, f.cps[victim])
		if err == nil {
			if answered == 0 {
				answered = time.Since(start)
			}
			if st.GetAppliedRevision() >= target {
				caught = time.Since(start)
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := result{Name: "fleet.cp_restart", Clients: 1, Seconds: caught.Seconds()}
	if caught == 0 {
		r.Errors = 1
	}
	r.Note = fmt.Sprintf("cp%d (a follower) stopped with SIGTERM, %d record changes committed without it, started again: answering Status after %.2fs, applied revision %d (the others' at restart) after %.2fs",
		victim+1, changes, answered.Seconds(), target, caught.Seconds())
	f.add(r)
	return nil
}

// dnsRestart stops the second dns processor, churns for 10 s without it,
// starts it and measures until it answers (bootstrapped) and until it
// answers every host's current address.
func (f *fleet) dnsRestart(ctx context.Context) error {
	i := f.stop("hivemind-dns2")
	_, changes, _, _ := f.churn(ctx, 10*time.Second, false)
	start, err := f.p.startAgain(i)
	if err != nil {
		return err
	}
	addr := f.dnsUDP[1]
	var ready time.Duration
	for time.Since(start) < 2*time.Minute {
		if soa(addr) == nil {
			ready = time.Since(start)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	at, missing := f.waitServed(addr, f.hosts, 5*time.Minute)
	r := result{Name: "fleet.dns_restart", Clients: 1, Errors: int64(missing)}
	if !at.IsZero() {
		r.Seconds = at.Sub(start).Seconds()
	}
	r.Note = fmt.Sprintf("dns2 stopped, %d record changes without it, started again: SOA answered (bootstrapped from the control plane) after %.2fs, every host's current address answered after %.2fs (a full sweep of %d names included); %d hosts not answered",
		changes, ready.Seconds(), r.Seconds, len(f.hosts), missing)
	f.add(r)
	return nil
}

// outageBurst takes two control-plane members down (no quorum), has
// Burst hosts change their record meanwhile (the fast path still carries
// it), and measures, from the members' start, until every one of them
// re-asserted its record on the control plane.
func (f *fleet) outageBurst(ctx context.Context) error {
	var idx []int
	for _, name := range []string{"hivemind-cp2", "hivemind-cp3"} {
		idx = append(idx, f.stop(name))
	}
	hosts := f.pick(f.cfg.Burst)
	for _, h := range hosts {
		_, failed := h.current()
		if _, err := h.set(f.change.Add(1), failed); err != nil {
			return err
		}
	}
	outage := time.Now()
	// The fast path: both dns processors answer the new records without a
	// quorum.
	var fast []int
	for _, a := range f.dnsUDP {
		_, m := f.waitServed(a, hosts, 20*time.Second)
		fast = append(fast, m)
	}
	if err := sleep(ctx, max(0, 10*time.Second-time.Since(outage))); err != nil {
		return err
	}
	var start time.Time
	for _, i := range idx {
		t, err := f.p.startAgain(i)
		if err != nil {
			return err
		}
		if start.IsZero() {
			start = t
		}
	}
	err := f.waitWritten(ctx, hosts, 5*time.Minute)
	el := time.Since(start)
	r := result{Name: "fleet.outage_reassert", Clients: len(hosts), Seconds: el.Seconds()}
	if err != nil {
		r.Errors = 1
	}
	r.Note = fmt.Sprintf("2 of 3 control-plane members down for %.0fs while %d hosts changed their record; from the members' start until every one of those records was acknowledged (publisher backoff ≤ 5s included); during the outage the fast path had them on the dns processors with %v hosts missing",
		start.Sub(outage).Seconds(), len(hosts), fast)
	if err != nil {
		r.Note += "; " + err.Error()
	}
	f.add(r)
	return nil
}

// notifierBurst fails NotifyBurst hosts at once (one per group, so every
// subscription has work) and measures each matching webhook from the
// event's commit time to its arrival, and repeats and misses.
func (f *fleet) notifierBurst(ctx context.Context) error {
	// Let the deliveries of the churn drain first.
	quiet, last := time.Now(), f.rcv.count()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && time.Since(quiet) < 3*time.Second; {
		time.Sleep(200 * time.Millisecond)
		if c := f.rcv.count(); c != last {
			quiet, last = time.Now(), c
		}
	}
	backlog := f.rcv.count()
	var hosts []*simHost
	for i := 0; i < len(f.hosts) && len(hosts) < f.cfg.NotifyBurst; i++ {
		if _, failed := f.hosts[i].current(); !failed {
			hosts = append(hosts, f.hosts[i])
		}
	}
	want := map[string]map[string]bool{} // uri → subscriptions
	expected := 0
	for _, h := range hosts {
		subs := map[string]bool{}
		for _, s := range f.matching(h.idx) {
			subs[s] = true
		}
		want["/nodes/"+h.name+"/host"] = subs
		expected += len(subs)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := h.current()
			_, _ = h.set(c, true)
		}()
	}
	wg.Wait()
	if err := f.waitWritten(ctx, hosts, time.Minute); err != nil {
		return err
	}
	// Wait for every expected webhook, then 5 s more for repeats.
	got := func() (map[string][]hookHit, int) {
		f.rcv.mu.Lock()
		defer f.rcv.mu.Unlock()
		by := map[string][]hookHit{} // sub|event id
		n := 0
		for _, h := range f.rcv.hits {
			if h.Time.Before(start.Add(-time.Second)) || want[h.URI] == nil || !want[h.URI][h.Sub] {
				continue
			}
			k := h.Sub + "|" + h.EventID
			if len(by[k]) == 0 {
				n++
			}
			by[k] = append(by[k], h)
		}
		return by, n
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, n := got(); n >= expected || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(5 * time.Second)
	by, n := got()
	var lat []time.Duration
	dups := 0
	for _, hs := range by {
		sort.Slice(hs, func(i, j int) bool { return hs[i].At.Before(hs[j].At) })
		lat = append(lat, max(0, hs[0].At.Sub(hs[0].Time)))
		dups += len(hs) - 1
	}
	r := summarize(lat)
	r.Name, r.Clients, r.Replicas, r.Seconds = "fleet.notifier.delivery", len(hosts), len(f.notif), time.Since(start).Seconds()
	r.Errors = int64(dups + max(0, expected-n))
	r.Note = fmt.Sprintf("%d hosts fail at once (every service critical); %d (subscription, event) deliveries expected over 100 subscriptions (50 prefix, 50 CEL), %d arrived, %d repeats, %d missing; latency from the event's commit time to the webhook's arrival; %d webhooks of the churn delivered before",
		len(hosts), expected, n, dups, max(0, expected-n), backlog)
	f.add(r)
	return nil
}
