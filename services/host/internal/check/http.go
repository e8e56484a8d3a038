package check

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// userAgent tells the checked service who is asking.
const userAgent = "hivemind-health-check"

// httpChecker passes on a 2xx answer, warns on 429 Too Many Requests (the
// service is up but shedding load) and is critical otherwise.
type httpChecker struct {
	url, method string
	header      http.Header
	client      *http.Client
	max         int
}

func newHTTPChecker(d Definition, maxOutput int) *httpChecker {
	method := d.Method
	if method == "" {
		method = http.MethodGet
	}
	tr := &http.Transport{
		Proxy: nil, // a local health endpoint is never reached through a proxy
		// A fresh connection per run: a check must see that the service
		// accepts connections, not that an old one survives.
		DisableKeepAlives: true,
	}
	if d.TLSSkipVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	return &httpChecker{
		url:    d.HTTP,
		method: method,
		header: d.Header.Clone(),
		client: &http.Client{Transport: tr},
		max:    maxOutput,
	}
}

func (c *httpChecker) Check(ctx context.Context) Result {
	what := fmt.Sprintf("HTTP %s %s", c.method, c.url)
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, nil)
	if err != nil {
		return Result{Critical, fmt.Sprintf("%s: %v", what, err)}
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "text/plain, text/*, */*")
	for k, vs := range c.header {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if h := c.header.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := c.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return timeoutResult(what, ctx)
		}
		return Result{Critical, fmt.Sprintf("%s: %v", what, err)}
	}
	defer resp.Body.Close()
	// Read one byte past the limit so truncate knows to mark the cut.
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(c.max)+1))
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return timeoutResult(what, ctx)
	}
	var st Status
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		st = Passing
	case resp.StatusCode == http.StatusTooManyRequests:
		st = Warning
	default:
		st = Critical
	}
	out := fmt.Sprintf("%s: %s Output: %s", what, resp.Status, body)
	return Result{st, truncate(out, c.max)}
}
