package replay

import (
	"path/filepath"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"google.golang.org/protobuf/proto"

	"identityverification/codec"
)

// With payload encryption on, the replayer needs the workers' converters:
// the recorded corpus (unencrypted, from before any key) still replays
// with them, and so does each history encrypted as a worker with the key
// would have written it, which does not replay without the key.
func TestHistoriesReplayWithThePayloadKey(t *testing.T) {
	key, err := codec.NewKey("test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := codec.New(key)
	if err != nil {
		t.Fatal(err)
	}
	withKey, without := NewWith(c.DataConverter(), c.FailureConverter()), New()
	files, _ := filepath.Glob(filepath.Join(corpus, "*.json"))
	if len(files) == 0 {
		t.Fatal("no recorded histories")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			h, err := ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			runID := h.GetEvents()[0].GetWorkflowExecutionStartedEventAttributes().GetOriginalExecutionRunId()
			if res := History(withKey, name, runID, h); !res.OK() {
				t.Errorf("the recorded history does not replay with the key: %s", res.Line())
			}
			n := 0
			codec.Walk(h, func(path string, p *commonpb.Payload) {
				if strings.Contains(path, "search_attributes") || strings.Contains(path, "header") {
					return // never encoded (codec.Walk)
				}
				enc, err := c.Encode([]*commonpb.Payload{p})
				if err != nil {
					t.Fatal(err)
				}
				proto.Reset(p)
				proto.Merge(p, enc[0])
				n++
			})
			if n == 0 {
				t.Fatal("no payload to encrypt")
			}
			if res := History(withKey, name, runID, h); !res.OK() {
				t.Errorf("encrypted (%d payloads), it does not replay with the key: %s", n, res.Line())
			}
			if res := History(without, name, runID, h); res.OK() {
				t.Errorf("encrypted (%d payloads), it replays without the key", n)
			}
		})
	}
}
