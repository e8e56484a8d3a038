package agent

import (
	"errors"
	"fmt"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/host/internal/check"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
	"github.com/hivemind/hivemind/services/host/internal/record"
)

// ErrCheckNotNamed is returned by UpdateTTL when no check is named and the
// service has no TTL check or several.
var ErrCheckNotNamed = errors.New("agent: name the check")

// UpdateTTL renews a TTL check of a service, found by its id or its name
// (either may be empty when the service has exactly one TTL check), and
// returns the check's state as published. Errors wrap
// check.ErrUnknownService, check.ErrUnknownCheck, check.ErrNotTTL or
// ErrCheckNotNamed.
func (a *Agent) UpdateTTL(serviceID, checkName string, st check.Status, output string) (*hivemindv1.CheckState, error) {
	a.mu.Lock()
	var svc *hostconfig.Service
	for i := range a.cfg.Services {
		if a.cfg.Services[i].ID == serviceID {
			svc = &a.cfg.Services[i]
		}
	}
	a.mu.Unlock()
	if svc == nil {
		return nil, fmt.Errorf("%w %q", check.ErrUnknownService, serviceID)
	}
	id, err := ttlCheck(svc, checkName)
	if err != nil {
		return nil, err
	}
	if err := a.runner.UpdateTTL(serviceID, id, st, output); err != nil {
		return nil, err
	}
	// The runner tells its observer on its own goroutine; rebuild now so
	// the answer (and the record) already show the update.
	a.rebuild()
	for _, s := range a.pub.Latest().GetServices() {
		if s.GetId() != serviceID {
			continue
		}
		for i, c := range s.GetChecks() {
			if i < len(svc.Checks) && svc.Checks[i].ID == id {
				return c, nil
			}
		}
	}
	return &hivemindv1.CheckState{Name: id, Kind: string(check.KindTTL), Status: record.Status(st), Output: output}, nil
}

func ttlCheck(svc *hostconfig.Service, name string) (string, error) {
	if name == "" {
		var ttls []string
		for _, c := range svc.Checks {
			if c.Kind() == check.KindTTL {
				ttls = append(ttls, c.ID)
			}
		}
		if len(ttls) != 1 {
			return "", fmt.Errorf("%w: service %q has %d TTL checks", ErrCheckNotNamed, svc.ID, len(ttls))
		}
		return ttls[0], nil
	}
	for _, c := range svc.Checks {
		if c.ID == name || c.Name == name {
			if c.Kind() != check.KindTTL {
				return "", fmt.Errorf("%w: %q of service %q is a %s check", check.ErrNotTTL, name, svc.ID, c.Kind())
			}
			return c.ID, nil
		}
	}
	return "", fmt.Errorf("%w %q of service %q", check.ErrUnknownCheck, name, svc.ID)
}

// Reload reads the configuration file again and applies it when it is
// valid and differs. A bad file changes nothing; the error joins
// *hostconfig.FieldError values when fields are bad. It returns the
// record after the reload.
func (a *Agent) Reload() (*hivemindv1.HostRecord, bool, error) {
	_, changed, err := a.config.Reload()
	if err != nil {
		return nil, false, err
	}
	return a.pub.Latest(), changed, nil
}
