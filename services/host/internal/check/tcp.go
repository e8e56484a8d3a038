package check

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// tcpChecker passes when a TCP connection to addr opens.
type tcpChecker struct{ addr string }

func (c tcpChecker) Check(ctx context.Context) Result {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return timeoutResult("TCP connect "+c.addr, ctx)
		}
		return Result{Critical, fmt.Sprintf("TCP connect %s: %v", c.addr, err)}
	}
	conn.Close()
	return Result{Passing, fmt.Sprintf("TCP connect %s: Success", c.addr)}
}
