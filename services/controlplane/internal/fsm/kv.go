package fsm

import (
	"bytes"
	"cmp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
)

func timestamp(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// loses says whether a write stamped writer must give way to the stored
// value: on node-owned keys an older timestamp loses, so a late retry never
// overwrites a newer value.
func loses(key string, stored *hivemindv1.KeyValue, writer uint64) bool {
	return stored != nil && strings.HasPrefix(key, NodesPrefix) && writer < stored.GetHlc()
}

// put stores key=value at the change's revision and emits its event.
func (m *Machine) put(c *change, key string, value []byte, writer uint64) (prev, kv *hivemindv1.KeyValue) {
	prev, _ = m.kvs.Get(&hivemindv1.KeyValue{Key: key})
	kv = &hivemindv1.KeyValue{Key: key, Value: value, CreateRevision: c.rev, ModRevision: c.rev, Version: 1, Hlc: writer}
	hook := hivemindv1.Hook_HOOK_CREATE
	if prev != nil {
		kv.CreateRevision = prev.CreateRevision
		kv.Version = prev.Version + 1
		hook = hivemindv1.Hook_HOOK_MODIFY
	}
	m.kvs.ReplaceOrInsert(kv)
	c.emit(&hivemindv1.Event{Type: EventPut, Hook: hook, Uri: key, Payload: value, Kv: kv})
	return prev, kv
}

func (m *Machine) del(c *change, kv *hivemindv1.KeyValue) {
	m.kvs.Delete(kv)
	c.emit(&hivemindv1.Event{Type: EventDelete, Hook: hivemindv1.Hook_HOOK_DELETE, Uri: kv.Key, Kv: kv})
}

// CheckWriterClock refuses a put or delete whose writer's hlc is more than
// maxAhead ahead of the command's own stamp. On /nodes/ keys the newer
// stamp wins, so a stamp far in the future (2^64-1) would make every later
// write to the key lose, the owner's included, forever.
//
// The leader calls it after stamping the command with its clock and before
// proposing it: a refused write never reaches the log, and the machine
// itself still reads no clock and carries no bound. maxAhead <= 0 checks
// nothing.
func CheckWriterClock(cmd *raftv1.Command, maxAhead time.Duration) error {
	var writer uint64
	switch op := cmd.GetOp().(type) {
	case *raftv1.Command_Put:
		writer = op.Put.GetHlc()
	case *raftv1.Command_Delete:
		writer = op.Delete.GetHlc()
	}
	if writer == 0 || maxAhead <= 0 {
		return nil
	}
	leader := hlc.Timestamp(cmd.GetHlc()).Physical()
	at := hlc.Timestamp(writer).Physical()
	if at.Sub(leader) > maxAhead {
		return invalid("hlc", "%d (%s) is %s ahead of the leader's clock (%s); a writer's clock may be at most %s ahead",
			writer, at.Format(time.RFC3339Nano), at.Sub(leader).Truncate(time.Millisecond), leader.Format(time.RFC3339Nano), maxAhead)
	}
	return nil
}

func (m *Machine) writerHLC(c *change, requested uint64) uint64 {
	if requested != 0 {
		return requested
	}
	return uint64(c.ts)
}

func (m *Machine) applyPut(c *change, req *hivemindv1.PutRequest) *hivemindv1.PutResponse {
	writer := m.writerHLC(c, req.GetHlc())
	stored, _ := m.kvs.Get(&hivemindv1.KeyValue{Key: req.GetKey()})
	if loses(req.GetKey(), stored, writer) {
		resp := &hivemindv1.PutResponse{Applied: false, Kv: stored, Header: c.header()}
		return resp
	}
	prev, kv := m.put(c, req.GetKey(), req.GetValue(), writer)
	resp := &hivemindv1.PutResponse{Applied: true, Kv: kv, Header: c.header()}
	if req.GetPrevKv() {
		resp.PrevKv = prev
	}
	return resp
}

// matching lists the stored keys a delete names.
func (m *Machine) matching(key string, prefix bool) []*hivemindv1.KeyValue {
	if !prefix {
		if kv, ok := m.kvs.Get(&hivemindv1.KeyValue{Key: key}); ok {
			return []*hivemindv1.KeyValue{kv}
		}
		return nil
	}
	var out []*hivemindv1.KeyValue
	m.kvs.AscendGreaterOrEqual(&hivemindv1.KeyValue{Key: key}, func(kv *hivemindv1.KeyValue) bool {
		if !strings.HasPrefix(kv.Key, key) {
			return false
		}
		// A prefix such as "/m" must not reach into the member registry.
		if !reserved(kv.Key) {
			out = append(out, kv)
		}
		return true
	})
	return out
}

func (m *Machine) applyDelete(c *change, req *hivemindv1.DeleteRequest) *hivemindv1.DeleteResponse {
	writer := m.writerHLC(c, req.GetHlc())
	resp := &hivemindv1.DeleteResponse{}
	for _, kv := range m.matching(req.GetKey(), req.GetPrefix()) {
		if loses(kv.Key, kv, writer) {
			continue
		}
		m.del(c, kv)
		resp.Deleted++
		resp.PrevKvs = append(resp.PrevKvs, kv)
	}
	resp.Header = c.header()
	return resp
}

func (m *Machine) applyTxn(c *change, req *hivemindv1.TxnRequest) *hivemindv1.TxnResponse {
	ok := true
	for _, c := range req.GetCompares() {
		if !m.compare(c) {
			ok = false
			break
		}
	}
	ops := req.GetSuccess()
	if !ok {
		ops = req.GetFailure()
	}
	resp := &hivemindv1.TxnResponse{Succeeded: ok}
	for _, op := range ops {
		r := &hivemindv1.TxnOpResult{}
		switch o := op.GetOp().(type) {
		case *hivemindv1.TxnOp_Put:
			// A transaction's own compares guard it; it does not take part
			// in last-writer-wins.
			_, r.Kv = m.put(c, o.Put.GetKey(), o.Put.GetValue(), uint64(c.ts))
		case *hivemindv1.TxnOp_Delete:
			for _, kv := range m.matching(o.Delete.GetKey(), o.Delete.GetPrefix()) {
				m.del(c, kv)
				r.Deleted++
			}
		case *hivemindv1.TxnOp_Get:
			r.Kv, _ = m.kvs.Get(&hivemindv1.KeyValue{Key: o.Get.GetKey()})
		}
		resp.Results = append(resp.Results, r)
	}
	resp.Header = c.header()
	return resp
}

func (m *Machine) compare(want *hivemindv1.Compare) bool {
	kv, found := m.kvs.Get(&hivemindv1.KeyValue{Key: want.GetKey()})
	if !found {
		kv = &hivemindv1.KeyValue{}
	}
	var diff int
	switch want.GetTarget() {
	case hivemindv1.Compare_TARGET_VALUE:
		diff = bytes.Compare(kv.GetValue(), want.GetValue())
	case hivemindv1.Compare_TARGET_VERSION:
		diff = cmp.Compare(kv.GetVersion(), want.GetNumber())
	case hivemindv1.Compare_TARGET_CREATE_REVISION:
		diff = cmp.Compare(kv.GetCreateRevision(), want.GetNumber())
	case hivemindv1.Compare_TARGET_MOD_REVISION:
		diff = cmp.Compare(kv.GetModRevision(), want.GetNumber())
	}
	switch want.GetResult() {
	case hivemindv1.Compare_RESULT_EQUAL:
		return diff == 0
	case hivemindv1.Compare_RESULT_NOT_EQUAL:
		return diff != 0
	case hivemindv1.Compare_RESULT_GREATER:
		return diff > 0
	case hivemindv1.Compare_RESULT_LESS:
		return diff < 0
	}
	return false
}

// applyAppend records an event a caller appends. Its source is the
// command's, which the API sets from the caller's identity; the request's
// own source field is never used, so no caller can speak for another.
func (m *Machine) applyAppend(c *change, req *hivemindv1.AppendEventRequest) *hivemindv1.AppendEventResponse {
	e := &hivemindv1.Event{
		Type:        req.GetType(),
		Hook:        req.GetHook(),
		Uri:         req.GetUri(),
		Ttl:         req.GetTtl(),
		Payload:     req.GetPayload(),
		Attachments: req.GetAttachments(),
	}
	c.emit(e)
	return &hivemindv1.AppendEventResponse{Event: e, Header: c.header()}
}
