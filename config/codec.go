package config

import (
	"fmt"
	"net/url"
	"strings"

	"identityverification/codec"
)

// keyRing reads the payload encryption keys ("id:base64,...", the first
// encrypting); nil when the variable is unset. The message of a bad value
// names the key by position and id, never its material.
func (p *parser) keyRing(name string) *codec.Codec {
	v := p.getenv(name)
	if strings.TrimSpace(v) == "" {
		return nil
	}
	c, err := codec.Parse(v)
	if err != nil {
		p.fail(name, err.Error()+"; want id:base64,... (the first key encrypts), each key 32 random bytes: `identity-verification gen-key` makes one")
		return nil
	}
	return c
}

// checkCodecServer validates the codec server's settings: a token needs
// keys to serve and is URL-safe (the Temporal UI carries it in the codec
// endpoint's path), origins are a scheme and a host, and in production the
// token is as long as any other secret.
func (p *parser) checkCodecServer(c Config) {
	if c.CodecToken != "" && strings.TrimSpace(p.getenv("PAYLOAD_ENCRYPTION_KEYS")) == "" {
		p.fail("CODEC_TOKEN", "is set but PAYLOAD_ENCRYPTION_KEYS is not: the codec server has no key to decode with")
	}
	if strings.IndexFunc(c.CodecToken, notURLSafe) >= 0 {
		// Never echoed: it is a secret.
		p.fail("CODEC_TOKEN", "may hold only letters, digits and . _ ~ - (it travels as a URL path segment for the Temporal UI): `openssl rand -hex 32` makes one")
	} else if c.Production {
		p.secret("CODEC_TOKEN", c.CodecToken)
	}
	for _, o := range c.CodecOrigins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			p.fail("CODEC_CORS_ORIGINS", fmt.Sprintf("%q is not an origin: want scheme://host[:port], such as https://temporal-ui.example.com", o))
		}
	}
}

// notURLSafe is true of a rune outside RFC 3986's unreserved characters
// ([A-Za-z0-9._~-]), the only ones a path segment carries unescaped.
func notURLSafe(r rune) bool {
	return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("._~-", r))
}
