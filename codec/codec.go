// Package codec encrypts workflow payloads before they leave the process, so
// that Temporal (a cluster or Temporal Cloud) stores ciphertext of what
// identity verification reveals about a person: statuses, a minor
// (under_supported_age), a fraud flag, review outcomes.
//
// Codec is an AES-256-GCM converter.PayloadCodec over a key ring: the first
// key encrypts, every key decrypts, so a new key goes first while the old
// ones stay to read histories they encrypted. Each encrypted payload names
// its key in its metadata. Payloads that are not encrypted (histories from
// before a key was configured) pass through Decode unchanged. Server serves
// the codec to the Temporal UI and CLI.
package codec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"
)

// The metadata of an encrypted payload: its encoding, and the id of the key
// that encrypted it. Its data is the GCM nonce followed by the sealed
// original payload (metadata and data, protobuf-encoded).
const (
	Encoding      = "binary/encrypted"
	MetadataKeyID = "encryption-key-id"
)

// KeySize is the length of a key: AES-256.
const KeySize = 32

// Errors of Decode, matched with errors.Is.
var (
	// ErrUnknownKey: the payload names a key the ring does not hold (keep
	// every key that encrypted a history still in retention).
	ErrUnknownKey = errors.New("codec: payload encrypted with a key not in the key ring")
	// ErrDecrypt: the payload does not decrypt with the key it names: it
	// was altered, or another key was given that key's id.
	ErrDecrypt = errors.New("codec: payload does not decrypt")
)

// Key is one key of the ring.
type Key struct {
	ID     string // names the key in each payload it encrypts; not secret
	Secret []byte // KeySize bytes
}

// String is the key's id: printing a key never shows its secret.
func (k Key) String() string { return k.ID }

// GoString is the key's id, for %#v.
func (k Key) GoString() string { return "codec.Key(" + k.ID + ")" }

// Entry is the key as one entry of the variable Parse reads: "id:base64".
func (k Key) Entry() string { return k.ID + ":" + base64.StdEncoding.EncodeToString(k.Secret) }

// NewKey makes a random key with the given id.
func NewKey(id string) (Key, error) {
	if !keyID.MatchString(id) {
		return Key{}, errBadID
	}
	k := Key{ID: id, Secret: make([]byte, KeySize)}
	if _, err := rand.Read(k.Secret); err != nil {
		return Key{}, fmt.Errorf("codec: %w", err)
	}
	return k, nil
}

// keyID is what a key id may be: short, and safe in metadata and logs.
var keyID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

var errBadID = errors.New("a key id is 1 to 64 letters, digits, '.', '_' or '-'")

// Codec encrypts with its first key and decrypts with any of its keys.
// Printing it shows the key ids only.
type Codec struct {
	ids  []string // in the ring's order; ids[0] encrypts
	ring map[string]cipher.AEAD
}

// New builds a codec over keys; keys[0] encrypts.
func New(keys ...Key) (*Codec, error) {
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	c := &Codec{ring: map[string]cipher.AEAD{}}
	for i, k := range keys {
		which := fmt.Sprintf("key %d", i+1)
		if !keyID.MatchString(k.ID) {
			return nil, fmt.Errorf("%s: %w", which, errBadID)
		}
		which += fmt.Sprintf(" (%s)", k.ID)
		if _, dup := c.ring[k.ID]; dup {
			return nil, fmt.Errorf("%s: the id is given twice", which)
		}
		if len(k.Secret) != KeySize {
			return nil, fmt.Errorf("%s: %d bytes, want %d (AES-256)", which, len(k.Secret), KeySize)
		}
		block, err := aes.NewCipher(k.Secret)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", which, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", which, err)
		}
		c.ids = append(c.ids, k.ID)
		c.ring[k.ID] = aead
	}
	return c, nil
}

// Parse reads a key ring written "id:base64,id:base64" (each secret
// KeySize random bytes, base64 as `openssl rand -base64 32` prints it),
// the first key encrypting. Its errors name a key by position and id,
// never by any of its secret.
func Parse(s string) (*Codec, error) {
	var keys []Key
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		id, b64, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("key %d: want id:base64-key", i+1)
		}
		if !keyID.MatchString(id) {
			return nil, fmt.Errorf("key %d: %w", i+1, errBadID)
		}
		secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return nil, fmt.Errorf("key %d (%s): not base64", i+1, id)
		}
		keys = append(keys, Key{ID: id, Secret: secret})
	}
	return New(keys...)
}

// EncryptingKey is the id of the key that encrypts.
func (c *Codec) EncryptingKey() string { return c.ids[0] }

// String lists the ring's key ids, the encrypting one first.
func (c *Codec) String() string {
	return fmt.Sprintf("AES-256-GCM keys %s (%s encrypts)", strings.Join(c.ids, ","), c.ids[0])
}

// GoString is String, for %#v.
func (c *Codec) GoString() string { return c.String() }

// Encode implements converter.PayloadCodec: each payload, metadata
// included, is sealed with the encrypting key.
func (c *Codec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	id := c.ids[0]
	aead := c.ring[id]
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		plain, err := proto.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("codec: %w", err)
		}
		// A random 96-bit nonce per payload: safe for far more payloads
		// than one key encrypts between rotations.
		nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("codec: %w", err)
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{converter.MetadataEncoding: []byte(Encoding), MetadataKeyID: []byte(id)},
			// The key id is authenticated too: moving a payload under
			// another id fails as surely as altering it.
			Data: aead.Seal(nonce, nonce, plain, []byte(id)),
		}
	}
	return out, nil
}

// Decode implements converter.PayloadCodec: an encrypted payload is opened
// with the key it names; any other payload is returned as it is.
func (c *Codec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != Encoding {
			out[i] = p
			continue
		}
		id := string(p.GetMetadata()[MetadataKeyID])
		aead, ok := c.ring[id]
		if !ok {
			return nil, fmt.Errorf("%w: key id %q (the ring holds %s)", ErrUnknownKey, id, strings.Join(c.ids, ","))
		}
		data := p.GetData()
		if len(data) < aead.NonceSize() {
			return nil, fmt.Errorf("%w: key id %q: too short", ErrDecrypt, id)
		}
		plain, err := aead.Open(nil, data[:aead.NonceSize()], data[aead.NonceSize():], []byte(id))
		if err != nil {
			return nil, fmt.Errorf("%w: key id %q: altered, or another key under that id", ErrDecrypt, id)
		}
		out[i] = &commonpb.Payload{}
		if err := proto.Unmarshal(plain, out[i]); err != nil {
			return nil, fmt.Errorf("%w: key id %q: %v", ErrDecrypt, id, err)
		}
	}
	return out, nil
}

// DataConverter is the SDK's default data converter with payloads passed
// through this codec: for client.Options and the replayer.
func (c *Codec) DataConverter() converter.DataConverter {
	return converter.NewCodecDataConverter(converter.GetDefaultDataConverter(), c)
}

// FailureConverter encodes failures' messages and stack traces as a
// payload (EncodeCommonAttributes) through DataConverter, so an error's
// text is encrypted too: history keeps only "Encoded failure" and the
// error's type in the clear.
func (c *Codec) FailureConverter() converter.FailureConverter {
	return temporal.NewDefaultFailureConverter(temporal.DefaultFailureConverterOptions{
		DataConverter: c.DataConverter(), EncodeCommonAttributes: true})
}
