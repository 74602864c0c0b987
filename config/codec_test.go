package config_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"identityverification/codec"
	"identityverification/config"
)

func TestPayloadEncryptionKeys(t *testing.T) {
	k1, err := codec.NewKey("k1")
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := codec.NewKey("k2")

	t.Run("unset leaves payloads unencrypted", func(t *testing.T) {
		c, err := config.Load(config.Map{"ENVIRONMENT": "development"})
		if err != nil || c.Codec != nil {
			t.Errorf("codec %v, %v; want none", c.Codec, err)
		}
	})
	t.Run("a ring encrypts with its first key", func(t *testing.T) {
		c, err := config.Load(config.Map{"ENVIRONMENT": "development", "PAYLOAD_ENCRYPTION_KEYS": k2.Entry() + "," + k1.Entry(),
			"CODEC_TOKEN": "t", "CODEC_CORS_ORIGINS": "http://127.0.0.1:8233, https://ui.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		if c.Codec == nil || c.Codec.EncryptingKey() != "k2" {
			t.Fatalf("codec %v; want k2 encrypting", c.Codec)
		}
		if c.CodecToken != "t" || strings.Join(c.CodecOrigins, " ") != "http://127.0.0.1:8233 https://ui.example.com" {
			t.Errorf("token %q, origins %q", c.CodecToken, c.CodecOrigins)
		}
	})

	secret := base64.StdEncoding.EncodeToString(k1.Secret)
	for _, tc := range []struct {
		name string
		env  config.Map
		want string
	}{
		{"a key without an id", config.Map{"PAYLOAD_ENCRYPTION_KEYS": secret}, "PAYLOAD_ENCRYPTION_KEYS: key 1: want id:base64-key"},
		{"a short key", config.Map{"PAYLOAD_ENCRYPTION_KEYS": "k1:" + base64.StdEncoding.EncodeToString([]byte("short"))},
			"PAYLOAD_ENCRYPTION_KEYS: key 1 (k1): 5 bytes, want 32"},
		{"a key that is not base64", config.Map{"PAYLOAD_ENCRYPTION_KEYS": k2.Entry() + ",k1:" + secret + "%"},
			"PAYLOAD_ENCRYPTION_KEYS: key 2 (k1): not base64"},
		{"a codec token without keys", config.Map{"CODEC_TOKEN": "t"}, "CODEC_TOKEN: is set but PAYLOAD_ENCRYPTION_KEYS is not"},
		{"a codec token that is not URL-safe", config.Map{"PAYLOAD_ENCRYPTION_KEYS": k1.Entry(), "CODEC_TOKEN": "tok/en?#" + secret},
			"CODEC_TOKEN: may hold only letters, digits and . _ ~ -"},
		{"an origin with a path", config.Map{"PAYLOAD_ENCRYPTION_KEYS": k1.Entry(), "CODEC_CORS_ORIGINS": "http://127.0.0.1:8233/"},
			`CODEC_CORS_ORIGINS: "http://127.0.0.1:8233/" is not an origin`},
		{"an origin without a scheme", config.Map{"PAYLOAD_ENCRYPTION_KEYS": k1.Entry(), "CODEC_CORS_ORIGINS": "ui.example.com"},
			`CODEC_CORS_ORIGINS: "ui.example.com" is not an origin`},
	} {
		t.Run(tc.name+" is a configuration error naming the variable", func(t *testing.T) {
			tc.env["ENVIRONMENT"] = "development"
			_, err := config.Load(tc.env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret[:12]) {
				t.Errorf("the error shows key material: %v", err)
			}
		})
	}
	t.Run("production wants a long codec token", func(t *testing.T) {
		_, err := config.Load(config.Map{"PAYLOAD_ENCRYPTION_KEYS": k1.Entry(), "CODEC_TOKEN": "short"})
		if err == nil || !strings.Contains(err.Error(), "CODEC_TOKEN:") || !strings.Contains(err.Error(), "32 bytes") {
			t.Errorf("err = %v; want CODEC_TOKEN too short", err)
		}
	})
}
