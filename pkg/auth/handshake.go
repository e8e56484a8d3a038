package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"github.com/hivemind/hivemind/pkg/secret"
)

// Handshake sizes and lifetimes.
const (
	// NonceSize is the length of the client's nonce.
	NonceSize = 32
	// NonceTTL is how long a server nonce may be answered.
	NonceTTL = 30 * time.Second
	// MaxNodeNameLen bounds a node name.
	MaxNodeNameLen = 128

	serverRandSize  = 16
	serverNonceSize = serverRandSize + 8 + sha256.Size
)

// Labels keep the three MACs made with the handshake key apart: a server
// proof is never a valid client proof, and neither is a valid nonce.
const (
	labelNonce       = "hivemind nonce v1"
	labelServerProof = "hivemind server proof v1"
	labelClientProof = "hivemind client proof v1"
)

// handshake holds the key and the MAC constructions both sides use.
type handshake struct{ key []byte }

func newHandshake(s secret.Secret) handshake {
	return handshake{key: s.Key(secret.PurposeHandshake)}
}

// mac is HMAC-SHA256 over the label and each part, each preceded by its
// length, so no two different inputs read the same.
func (h handshake) mac(label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, h.key)
	var n [4]byte
	for _, p := range append([][]byte{[]byte(label)}, parts...) {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		m.Write(n[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// proof binds both nonces and both names. The server's and the client's
// differ only in the label.
func (h handshake) proof(label, nodeName, serverName string, clientNonce, serverNonce []byte) []byte {
	return h.mac(label, []byte(nodeName), []byte(serverName), clientNonce, serverNonce)
}

// newServerNonce returns random || expiry || MAC. The MAC covers the
// client's nonce and name and the server's name, so the nonce answers only
// that challenge, on that server: the server keeps no state between
// Challenge and Authenticate.
func (h handshake) newServerNonce(now time.Time, nodeName, serverName string, clientNonce []byte) []byte {
	b := make([]byte, serverRandSize+8, serverNonceSize)
	_, _ = rand.Read(b[:serverRandSize])
	binary.BigEndian.PutUint64(b[serverRandSize:], uint64(now.Add(NonceTTL).UnixNano()))
	return append(b, h.nonceMAC(b, nodeName, serverName, clientNonce)...)
}

func (h handshake) nonceMAC(head []byte, nodeName, serverName string, clientNonce []byte) []byte {
	return h.mac(labelNonce, head, []byte(nodeName), []byte(serverName), clientNonce)
}

var (
	errNonceForged  = errors.New("server nonce was not issued by this node for this challenge")
	errNonceExpired = errors.New("server nonce expired; start again with Challenge")
)

// checkServerNonce verifies a nonce newServerNonce made and returns its
// expiry.
func (h handshake) checkServerNonce(now time.Time, nonce []byte, nodeName, serverName string, clientNonce []byte) (time.Time, error) {
	head, sum := nonce[:serverRandSize+8], nonce[serverRandSize+8:]
	if !hmac.Equal(sum, h.nonceMAC(head, nodeName, serverName, clientNonce)) {
		return time.Time{}, errNonceForged
	}
	exp := time.Unix(0, int64(binary.BigEndian.Uint64(head[serverRandSize:])))
	if !now.Before(exp) {
		return time.Time{}, errNonceExpired
	}
	return exp, nil
}
