package subscription_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// The index selects exactly the subscriptions a look at every one of them
// selects, through random sets, replacements (a prefix changed) and
// deletions, with prefixes that nest, share a start, or are empty.
func TestIndexSelectsAsAScanDoes(t *testing.T) {
	prefixes := []string{"", "/", "/srv/", "/srv/web", "/srv/web/", "/srv/db/", "/nodes/", "/nodes/host1/", "/app/a", "/app/ab", "/x"}
	uris := []string{"/", "/srv/web", "/srv/web/a", "/srv/webx", "/srv/db/1", "/nodes/host1/host", "/nodes/host2/host", "/app/a", "/app/abc", "/app/b", "/y", ""}
	types := []string{"", "kv.put", "member.failed"}
	rng := rand.New(rand.NewPCG(1, 2))
	idx := subscription.NewIndex()
	all := map[string]*subscription.Compiled{}
	for step := range 3000 {
		name := fmt.Sprintf("s%d", rng.IntN(40))
		if rng.IntN(4) == 0 {
			idx.Delete(name)
			delete(all, name)
		} else {
			sub := &hivemindv1.Subscription{Name: name, Prefix: prefixes[rng.IntN(len(prefixes))]}
			if ty := types[rng.IntN(len(types))]; ty != "" {
				sub.Types = []string{ty}
			}
			c := &subscription.Compiled{Sub: sub}
			idx.Set(name, c)
			all[name] = c
		}
		ev := delivery.Event{Revision: int64(step + 1), URI: uris[rng.IntN(len(uris))], Type: types[1+rng.IntN(2)]}
		var want, got []string
		for n, c := range all {
			if c.Selects(ev) {
				want = append(want, n)
			}
		}
		idx.Selecting(ev, func(n string, c *subscription.Compiled) {
			if all[n] != c {
				t.Fatalf("step %d: %s selected with a stale subscription", step, n)
			}
			got = append(got, n)
		})
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) || idx.Len() != len(all) {
			t.Fatalf("step %d, event %+v: index selects %v, a scan %v (len %d, want %d)", step, ev, got, want, idx.Len(), len(all))
		}
	}
}
