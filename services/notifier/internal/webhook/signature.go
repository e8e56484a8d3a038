package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// secretPrefix marks a secret in the Standard Webhooks form: the key is
// the base64 text after it.
const secretPrefix = "whsec_"

// ParseSecret returns the signing key of a subscription's secret: the
// decoded bytes of a "whsec_<base64>" secret, or the bytes of any other
// non-empty string.
func ParseSecret(secret string) ([]byte, error) {
	if secret == "" {
		return nil, errors.New("webhook secret is empty")
	}
	if b64, ok := strings.CutPrefix(secret, secretPrefix); ok {
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("webhook secret: %s form with invalid base64: %w", secretPrefix, err)
		}
		if len(key) == 0 {
			return nil, errors.New("webhook secret: empty key")
		}
		return key, nil
	}
	return []byte(secret), nil
}

// NewSecret makes a random secret in the "whsec_" form, for a subscription
// created without one.
func NewSecret() string {
	key := make([]byte, 24)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	return secretPrefix + base64.StdEncoding.EncodeToString(key)
}

// signature is the webhook-signature header value: version 1, HMAC-SHA256
// over "id.timestamp.body".
func signature(key []byte, id string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(timestamp, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}
