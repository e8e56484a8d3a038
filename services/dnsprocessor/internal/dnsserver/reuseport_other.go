//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package dnsserver

import "net"

// listenUDP binds one UDP socket: this system cannot share a port.
func listenUDP(addr string, _ int) ([]net.PacketConn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	return []net.PacketConn{pc}, nil
}
