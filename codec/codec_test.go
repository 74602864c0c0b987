package codec_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/proto"

	"identityverification/codec"
)

// outcome stands for what the workflow records: an id and the codes that
// say something about a person.
type outcome struct {
	SessionID string `json:"session_id"`
	Code      string `json:"code"`
}

func newKey(t *testing.T, id string) codec.Key {
	t.Helper()
	k, err := codec.NewKey(id)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCodec(t *testing.T, keys ...codec.Key) *codec.Codec {
	t.Helper()
	c, err := codec.New(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCodecRoundTrip(t *testing.T) {
	c := newCodec(t, newKey(t, "k1"))
	dc := c.DataConverter()
	in := outcome{SessionID: "vs_123", Code: "under_supported_age"}
	p, err := dc.ToPayload(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(p.Metadata[converter.MetadataEncoding]); got != codec.Encoding {
		t.Errorf("encoding = %q; want %q", got, codec.Encoding)
	}
	if got := string(p.Metadata[codec.MetadataKeyID]); got != "k1" {
		t.Errorf("key id = %q; want k1", got)
	}
	if strings.Contains(string(p.Data), "under_supported_age") || strings.Contains(string(p.Data), "json/plain") {
		t.Errorf("the payload's data holds the plaintext: %q", p.Data)
	}
	var out outcome
	if err := dc.FromPayload(p, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("decoded %+v; want %+v", out, in)
	}
}

func TestCodecEncryptsEachPayloadAfresh(t *testing.T) {
	c := newCodec(t, newKey(t, "k1"))
	plain, _ := converter.GetDefaultDataConverter().ToPayload("verified")
	a, err := c.Encode([]*commonpb.Payload{plain, plain})
	if err != nil {
		t.Fatal(err)
	}
	if string(a[0].Data) == string(a[1].Data) {
		t.Error("the same payload encrypts to the same bytes twice: the nonce is not fresh")
	}
}

func TestCodecRotation(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	plain, _ := converter.GetDefaultDataConverter().ToPayload(outcome{SessionID: "vs_1", Code: "selfie_manipulated"})
	old, err := newCodec(t, k1).Encode([]*commonpb.Payload{plain})
	if err != nil {
		t.Fatal(err)
	}
	rotated := newCodec(t, k2, k1)

	t.Run("a payload of the old key decodes once the new key is first", func(t *testing.T) {
		got, err := rotated.Decode(old)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got[0], plain) {
			t.Errorf("decoded %v; want %v", got[0], plain)
		}
	})
	t.Run("new payloads are encrypted with the new key", func(t *testing.T) {
		fresh, err := rotated.Encode([]*commonpb.Payload{plain})
		if err != nil {
			t.Fatal(err)
		}
		if id := string(fresh[0].Metadata[codec.MetadataKeyID]); id != "k2" || rotated.EncryptingKey() != "k2" {
			t.Errorf("encrypted with %q (encrypting key %q); want k2", id, rotated.EncryptingKey())
		}
		if _, err := newCodec(t, k1).Decode(fresh); !errors.Is(err, codec.ErrUnknownKey) {
			t.Errorf("the old ring decoded a new payload: %v", err)
		}
	})
	t.Run("once the old key is dropped its payloads no longer decode", func(t *testing.T) {
		_, err := newCodec(t, k2).Decode(old)
		if !errors.Is(err, codec.ErrUnknownKey) || !strings.Contains(err.Error(), `"k1"`) {
			t.Errorf("err = %v; want ErrUnknownKey naming k1", err)
		}
	})
}

func TestCodecRefusesWhatItCannotTrust(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	c := newCodec(t, k1, k2)
	plain, _ := converter.GetDefaultDataConverter().ToPayload("in_review")
	encrypt := func() *commonpb.Payload {
		out, err := c.Encode([]*commonpb.Payload{plain})
		if err != nil {
			t.Fatal(err)
		}
		return out[0]
	}
	for _, tc := range []struct {
		name   string
		change func(p *commonpb.Payload)
		want   error
	}{
		{"an unknown key id", func(p *commonpb.Payload) { p.Metadata[codec.MetadataKeyID] = []byte("k9") }, codec.ErrUnknownKey},
		{"no key id", func(p *commonpb.Payload) { delete(p.Metadata, codec.MetadataKeyID) }, codec.ErrUnknownKey},
		{"a flipped ciphertext byte", func(p *commonpb.Payload) { p.Data[len(p.Data)-20] ^= 1 }, codec.ErrDecrypt},
		{"a flipped nonce byte", func(p *commonpb.Payload) { p.Data[0] ^= 1 }, codec.ErrDecrypt},
		{"a truncated payload", func(p *commonpb.Payload) { p.Data = p.Data[:5] }, codec.ErrDecrypt},
		{"another key's id in the ring", func(p *commonpb.Payload) { p.Metadata[codec.MetadataKeyID] = []byte("k2") }, codec.ErrDecrypt},
	} {
		t.Run(tc.name+" fails", func(t *testing.T) {
			p := encrypt()
			tc.change(p)
			if _, err := c.Decode([]*commonpb.Payload{p}); !errors.Is(err, tc.want) {
				t.Errorf("err = %v; want %v", err, tc.want)
			}
		})
	}
}

func TestCodecPassesUnencryptedPayloadsThrough(t *testing.T) {
	c := newCodec(t, newKey(t, "k1"))
	plain, _ := converter.GetDefaultDataConverter().ToPayloads("verified", outcome{SessionID: "vs_1"}, nil, []byte{1, 2})
	got, err := c.Decode(plain.Payloads)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if !proto.Equal(got[i], plain.Payloads[i]) {
			t.Errorf("payload %d: %v; want it unchanged: %v", i, got[i], plain.Payloads[i])
		}
	}
	// A history recorded before the key reads through the codec's data
	// converter.
	var s string
	if err := c.DataConverter().FromPayload(plain.Payloads[0], &s); err != nil || s != "verified" {
		t.Errorf("FromPayload = %q, %v", s, err)
	}
}

func TestFailureMessagesAreEncrypted(t *testing.T) {
	c := newCodec(t, newKey(t, "k1"))
	fc := c.FailureConverter()
	f := fc.ErrorToFailure(temporal.NewApplicationError("selfie_manipulated on vs_1", "ReviewRefused"))
	if f.GetMessage() == "" || strings.Contains(f.GetMessage(), "selfie") || f.GetStackTrace() != "" {
		t.Errorf("failure message %q, stack %q: want both moved into the encoded attributes", f.GetMessage(), f.GetStackTrace())
	}
	if got := string(f.GetEncodedAttributes().GetMetadata()[converter.MetadataEncoding]); got != codec.Encoding {
		t.Errorf("encoded attributes' encoding = %q; want %q", got, codec.Encoding)
	}
	var app *temporal.ApplicationError
	if err := fc.FailureToError(f); !errors.As(err, &app) || app.Message() != "selfie_manipulated on vs_1" || app.Type() != "ReviewRefused" {
		t.Errorf("FailureToError = %v; want the message and type back", err)
	}
}

func TestParseKeyRing(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "2025-06.b")
	c, err := codec.Parse(" " + k2.Entry() + " , " + k1.Entry() + ",")
	if err != nil {
		t.Fatal(err)
	}
	if c.EncryptingKey() != "2025-06.b" {
		t.Errorf("encrypting key %q; want the first, 2025-06.b", c.EncryptingKey())
	}
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	secret := base64.StdEncoding.EncodeToString(k1.Secret)
	for _, tc := range []struct{ name, value, want string }{
		{"an empty ring", " , ", "no key"},
		{"a key without an id", secret, "key 1: want id:base64-key"},
		{"an id with a space", "k 1:" + secret, "key 1: a key id is"},
		{"a key that is not base64", "k1:" + secret[:10] + "!" + secret[11:], "key 1 (k1): not base64"},
		{"a 128-bit key", k1.Entry() + ",k2:" + short, "key 2 (k2): 16 bytes, want 32"},
		{"an id given twice", k1.Entry() + ",k1:" + secret, "key 2 (k1): the id is given twice"},
	} {
		t.Run(tc.name+" is refused", func(t *testing.T) {
			_, err := codec.Parse(tc.value)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret[:8]) || strings.Contains(err.Error(), short[:8]) {
				t.Errorf("the error shows key material: %v", err)
			}
		})
	}
}

func TestPrintingShowsKeyIDsOnly(t *testing.T) {
	k := newKey(t, "k1")
	c := newCodec(t, k, newKey(t, "k0"))
	secret := base64.StdEncoding.EncodeToString(k.Secret)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v %#v", c, c), fmt.Sprintf("%v %+v %#v", k, k, k)} {
		if strings.Contains(s, secret) || strings.Contains(s, string(k.Secret)) || strings.Contains(s, fmt.Sprint(k.Secret)) {
			t.Errorf("printed %q: shows the key", s)
		}
	}
	if got := c.String(); got != "AES-256-GCM keys k1,k0 (k1 encrypts)" {
		t.Errorf("String = %q", got)
	}
}
