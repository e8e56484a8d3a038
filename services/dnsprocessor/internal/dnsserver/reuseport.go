//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package dnsserver

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenUDP binds n UDP sockets to addr with SO_REUSEPORT, or one socket
// when the kernel does not take the option.
func listenUDP(addr string, n int) ([]net.PacketConn, error) {
	var optErr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			optErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
	}}
	first, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, err
	}
	pcs := []net.PacketConn{first}
	if optErr != nil {
		return pcs, nil // the first socket still serves, alone
	}
	// The others take the port the first one got (addr may say port 0).
	for len(pcs) < n {
		pc, err := lc.ListenPacket(context.Background(), "udp", first.LocalAddr().String())
		if err != nil {
			for _, p := range pcs {
				p.Close()
			}
			return nil, err
		}
		pcs = append(pcs, pc)
	}
	return pcs, nil
}
