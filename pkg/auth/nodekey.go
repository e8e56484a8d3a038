package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/hivemind/hivemind/pkg/atomicfile"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// NodeKeyFile is the name of a node's private key in its data directory.
const NodeKeyFile = "node.key"

// NodeKey is a node's identity key: an ed25519 key pair the node makes
// once and keeps in its data directory. Its first approved join binds the
// node's name to the public key; every later handshake and join for that
// name must be signed with it.
type NodeKey struct {
	priv ed25519.PrivateKey
}

// NewNodeKey returns a fresh key, for tests and nodes without a data
// directory.
func NewNodeKey() NodeKey {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(fmt.Sprintf("auth: generate ed25519 key: %v", err)) // crypto/rand does not fail
	}
	return NodeKey{priv: priv}
}

// LoadOrCreateNodeKey reads dir/node.key (PKCS#8 PEM), or makes a key and
// writes it there (mode 0600) when the file does not exist.
func LoadOrCreateNodeKey(dir string) (NodeKey, error) {
	path := filepath.Join(dir, NodeKeyFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k := NewNodeKey()
		der, err := x509.MarshalPKCS8PrivateKey(k.priv)
		if err != nil {
			return NodeKey{}, fmt.Errorf("node key: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return NodeKey{}, fmt.Errorf("node key: %w", err)
		}
		if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return NodeKey{}, fmt.Errorf("node key: %w", err)
		}
		return k, nil
	}
	if err != nil {
		return NodeKey{}, fmt.Errorf("node key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return NodeKey{}, fmt.Errorf("node key %s: not a PEM \"PRIVATE KEY\" block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return NodeKey{}, fmt.Errorf("node key %s: %w", path, err)
	}
	priv, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return NodeKey{}, fmt.Errorf("node key %s: a %T, want an ed25519 key", path, parsed)
	}
	return NodeKey{priv: priv}, nil
}

// Public returns the public key (32 bytes).
func (k NodeKey) Public() []byte { return []byte(k.priv.Public().(ed25519.PublicKey)) }

// Signer is the private key, for the TLS certificate issued for it: the
// certificate the control plane issues certifies this key, so the node
// presents it with the key it already has.
func (k NodeKey) Signer() crypto.Signer { return k.priv }

// Valid reports whether k holds a key.
func (k NodeKey) Valid() bool { return len(k.priv) == ed25519.PrivateKeySize }

func (k NodeKey) sign(msg []byte) []byte { return ed25519.Sign(k.priv, msg) }

// Sign signs msg with the key, for packages that define statements of
// their own (admission tickets). Every statement a node key signs starts
// with a label naming what it is, so no signature is good for two
// purposes.
func (k NodeKey) Sign(msg []byte) []byte { return k.sign(msg) }

// Labels of what node keys sign, so a signature over one statement is
// never valid for another.
const (
	labelKeyProof = "hivemind key proof v1"
	labelJoin     = "hivemind join v1"
)

// statement encodes a label and parts, each preceded by its length, so no
// two different inputs encode alike.
func statement(label string, parts ...[]byte) []byte {
	var out []byte
	for _, p := range append([][]byte{[]byte(label)}, parts...) {
		out = binary.BigEndian.AppendUint32(out, uint32(len(p)))
		out = append(out, p...)
	}
	return out
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func keyProofStatement(nodeName, serverName string, clientNonce, serverNonce []byte) []byte {
	return statement(labelKeyProof, []byte(nodeName), []byte(serverName), clientNonce, serverNonce)
}

func joinStatement(req *hivemindv1.JoinRequest) []byte {
	parts := [][]byte{
		[]byte(req.GetName()), req.GetPublicKey(), u64(req.GetIncarnation()),
		[]byte(req.GetGrpcAddress()), []byte(req.GetGossipAddress()),
	}
	for _, list := range [][]string{req.GetRoles().GetPerforms(), req.GetRoles().GetRequires(), req.GetRoles().GetNeedsBootstrap()} {
		parts = append(parts, u64(uint64(len(list))))
		for _, r := range list {
			parts = append(parts, []byte(r))
		}
	}
	return statement(labelJoin, parts...)
}

// SignJoin sets req's public key to k's and signs the request.
func (k NodeKey) SignJoin(req *hivemindv1.JoinRequest) {
	req.PublicKey = k.Public()
	req.Signature = k.sign(joinStatement(req))
}

// Errors of VerifyJoin.
var (
	ErrNoPublicKey   = errors.New("public_key: must be an ed25519 public key of 32 bytes")
	ErrBadSignature  = errors.New("signature: does not verify with public_key (the request was not signed by the holder of that key, or was altered)")
	ErrKeyNotMatched = errors.New("public_key: the name is bound to another key")
)

// VerifyJoin checks that req is signed by the holder of req.public_key.
func VerifyJoin(req *hivemindv1.JoinRequest) error {
	if len(req.GetPublicKey()) != ed25519.PublicKeySize {
		return ErrNoPublicKey
	}
	if !ed25519.Verify(req.GetPublicKey(), joinStatement(req), req.GetSignature()) {
		return ErrBadSignature
	}
	return nil
}

// SameKey reports whether two public keys are the same.
func SameKey(a, b []byte) bool { return len(a) > 0 && slices.Equal(a, b) }
