//go:build !unix

package seq

// lock is a no-op where flock is not available.
func lock(string) (func() error, error) { return func() error { return nil }, nil }
