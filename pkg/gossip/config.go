package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/ticket"
)

// Config configures an Agent. Start from a preset (DefaultLANConfig,
// FastLANConfig, DefaultLocalConfig, TestConfig) and adjust it; the timing
// fields mean what memberlist's fields of the same name mean.
type Config struct {
	// Name of the node, unique in the cluster; the name tickets are issued
	// for. At most ticket.MaxNameLength bytes.
	Name string

	// BindAddr and BindPort are where gossip listens (UDP and TCP on the
	// same port). Port 0 picks a free one.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort are what other members dial; empty
	// and 0 mean the bound address and port.
	AdvertiseAddr string
	AdvertisePort int

	// Secret is the cluster secret. Gossip is encrypted and authenticated
	// with its secret.PurposeGossip key, in both directions.
	Secret secret.Secret

	// Issuers gives the public keys of the control-plane members that sign
	// admission tickets. It is called from memberlist's delegates, so it
	// must not block.
	Issuers ticket.KeyOf

	// DataDir holds the generation file. Every New raises the generation
	// kept there, so a restarted node is newer than its previous life.
	DataDir string

	// Meta is what this node announces. Meta.Incarnation is set by New
	// from DataDir; Meta.Leaving is set by Leave.
	Meta Meta

	// Logger receives the agent's and memberlist's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer, when set, gets the agent's metrics.
	Registerer prometheus.Registerer

	// Observer, when set, is told of every change of the view.
	Observer Observer
	// OnNewerEpoch, when set, is called when a member shows a valid ticket
	// for a higher epoch than any seen so far (ours included): this node
	// should join again to get a ticket for that epoch.
	OnNewerEpoch func(epoch uint64, from string)
	// Ping, when set, adds a payload to probe acks and sees each probe's
	// round trip (e.g. for network coordinates).
	Ping PingHook

	ProbeInterval           time.Duration
	ProbeTimeout            time.Duration
	IndirectChecks          int
	SuspicionMult           int
	SuspicionMaxTimeoutMult int
	AwarenessMaxMultiplier  int
	GossipInterval          time.Duration
	GossipNodes             int
	GossipToTheDeadTime     time.Duration
	RetransmitMult          int
	PushPullInterval        time.Duration
	TCPTimeout              time.Duration
	// DeadNodeReclaimTime is how long a dead node's name stays bound to
	// its old address. The presets keep it minimal: a node that restarts
	// elsewhere must take its name back at once, and an older life cannot
	// take it back because the agent refuses alive messages of an older
	// generation.
	DeadNodeReclaimTime time.Duration
}

// DefaultLANConfig is memberlist's LAN preset: probe every second,
// suspicion multiplier 4; listens on all addresses, port 7946.
func DefaultLANConfig(name string) Config {
	return fromMemberlist(name, memberlist.DefaultLANConfig())
}

// DefaultLocalConfig is memberlist's local (loopback) preset.
func DefaultLocalConfig(name string) Config {
	return fromMemberlist(name, memberlist.DefaultLocalConfig())
}

// FastLANConfig is hivemind's LAN preset: probe every 200 ms (timeout
// 100 ms), gossip every 50 ms, memberlist's suspicion multiplier 4 and a
// maximum of 4× that. In a 50-node pool on loopback it declares a killed
// member dead in about 2 s (DefaultLANConfig: about 9 s). It is not yet
// safe on starved CPUs: with the CPU saturated it declared live members
// dead, which DefaultLANConfig did not; see docs/membership.md.
func FastLANConfig(name string) Config {
	c := DefaultLANConfig(name)
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 4
	c.SuspicionMaxTimeoutMult = 4
	c.GossipInterval = 50 * time.Millisecond
	c.GossipToTheDeadTime = 5 * time.Second
	c.PushPullInterval = 15 * time.Second
	return c
}

// TestConfig is a preset for in-process tests: loopback, a free port, and
// fast timings (see FailureDetectionTime).
func TestConfig(name string) Config {
	c := DefaultLocalConfig(name)
	c.BindAddr, c.BindPort, c.AdvertisePort = "127.0.0.1", 0, 0
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.IndirectChecks = 2
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 3
	c.GossipInterval = 20 * time.Millisecond
	c.GossipToTheDeadTime = 2 * time.Second
	c.PushPullInterval = time.Second
	c.TCPTimeout = time.Second
	return c
}

func fromMemberlist(name string, m *memberlist.Config) Config {
	return Config{
		Name:                    name,
		BindAddr:                m.BindAddr,
		BindPort:                m.BindPort,
		AdvertisePort:           m.AdvertisePort,
		ProbeInterval:           m.ProbeInterval,
		ProbeTimeout:            m.ProbeTimeout,
		IndirectChecks:          m.IndirectChecks,
		SuspicionMult:           m.SuspicionMult,
		SuspicionMaxTimeoutMult: m.SuspicionMaxTimeoutMult,
		AwarenessMaxMultiplier:  m.AwarenessMaxMultiplier,
		GossipInterval:          m.GossipInterval,
		GossipNodes:             m.GossipNodes,
		GossipToTheDeadTime:     m.GossipToTheDeadTime,
		RetransmitMult:          m.RetransmitMult,
		PushPullInterval:        m.PushPullInterval,
		TCPTimeout:              m.TCPTimeout,
		DeadNodeReclaimTime:     time.Nanosecond,
	}
}

// FailureDetectionTime bounds how long a cluster of n members configured
// with c takes to declare a silent member dead: every other member probes
// it within a round of n-1 probes, the probe and its indirect checks time
// out within a probe interval, the suspicion runs at most its maximum, and
// the verdict is gossiped within a few gossip intervals.
func (c Config) FailureDetectionTime(n int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	suspicion := time.Duration(float64(c.SuspicionMult) * scale * float64(c.ProbeInterval))
	round := time.Duration(max(n-1, 1)) * c.ProbeInterval
	return round + c.ProbeInterval + time.Duration(c.SuspicionMaxTimeoutMult)*suspicion + 5*c.GossipInterval
}

func (c Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("gossip: config has no Name")
	case len(c.Name) > maxNameLength:
		return fmt.Errorf("gossip: name is %d bytes, at most %d", len(c.Name), maxNameLength)
	case !c.Secret.Valid():
		return errors.New("gossip: config has no cluster Secret")
	case c.Issuers == nil:
		return errors.New("gossip: config has no Issuers to check tickets with")
	case c.DataDir == "":
		return errors.New("gossip: config has no DataDir for the generation file")
	case c.ProbeInterval <= c.ProbeTimeout:
		return fmt.Errorf("gossip: ProbeInterval %v must exceed ProbeTimeout %v", c.ProbeInterval, c.ProbeTimeout)
	}
	return nil
}

// memberlistConfig builds memberlist's configuration; the delegates are
// filled in by New.
func (c Config) memberlistConfig() *memberlist.Config {
	m := memberlist.DefaultLANConfig()
	m.Name = c.Name
	m.BindAddr, m.BindPort = c.BindAddr, c.BindPort
	m.AdvertiseAddr, m.AdvertisePort = c.AdvertiseAddr, c.AdvertisePort
	if m.AdvertisePort == 0 {
		m.AdvertisePort = c.BindPort
	}
	m.SecretKey = c.Secret.Key(secret.PurposeGossip)
	m.GossipVerifyIncoming, m.GossipVerifyOutgoing = true, true
	m.ProbeInterval, m.ProbeTimeout = c.ProbeInterval, c.ProbeTimeout
	m.IndirectChecks = c.IndirectChecks
	m.SuspicionMult, m.SuspicionMaxTimeoutMult = c.SuspicionMult, c.SuspicionMaxTimeoutMult
	m.AwarenessMaxMultiplier = c.AwarenessMaxMultiplier
	m.GossipInterval, m.GossipNodes, m.GossipToTheDeadTime = c.GossipInterval, c.GossipNodes, c.GossipToTheDeadTime
	m.RetransmitMult = c.RetransmitMult
	m.PushPullInterval, m.TCPTimeout = c.PushPullInterval, c.TCPTimeout
	m.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	return m
}
