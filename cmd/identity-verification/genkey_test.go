package main

import (
	"strings"
	"testing"

	"identityverification/config"
)

func TestGenKeyPrintsAKeyTheConfigurationTakes(t *testing.T) {
	var out strings.Builder
	if err := genKey([]string{"-id", "k2"}, &out); err != nil {
		t.Fatal(err)
	}
	entry := strings.TrimSpace(out.String())
	if !strings.HasPrefix(entry, "k2:") {
		t.Fatalf("printed %q; want k2:<base64>", entry)
	}
	c, err := config.Load(config.Map{"ENVIRONMENT": "development", "PAYLOAD_ENCRYPTION_KEYS": entry})
	if err != nil || c.Codec == nil || c.Codec.EncryptingKey() != "k2" {
		t.Fatalf("PAYLOAD_ENCRYPTION_KEYS=<printed key>: codec %v, %v", c.Codec, err)
	}
	var again strings.Builder
	genKey([]string{"-id", "k2"}, &again)
	if again.String() == out.String() {
		t.Error("two runs printed the same key")
	}
}
