package codec

import (
	"fmt"
	"slices"

	commonpb "go.temporal.io/api/common/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Walk calls fn for every payload in m (a history, an event, a failure),
// with the path of fields that leads to it, such as
// "events[0].workflow_execution_started_event_attributes.input.payloads[0]".
// It is how a check sees what a history holds in the clear; fn may change
// the payload in place.
//
// Two kinds of payload never pass through a codec, by Temporal's design:
// search attributes (the server indexes them) and headers (context
// propagation).
func Walk(m proto.Message, fn func(path string, p *commonpb.Payload)) {
	walk(m.ProtoReflect(), "", fn)
}

func walk(m protoreflect.Message, path string, fn func(string, *commonpb.Payload)) {
	if p, ok := m.Interface().(*commonpb.Payload); ok {
		fn(path, p)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		if path != "" {
			name = path + "." + name
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				walk(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", name, i), fn)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			var keys []string
			values := map[string]protoreflect.Message{}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				keys = append(keys, k.String())
				values[k.String()] = mv.Message()
				return true
			})
			slices.Sort(keys)
			for _, k := range keys {
				walk(values[k], fmt.Sprintf("%s[%s]", name, k), fn)
			}
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walk(v.Message(), name, fn)
		}
		return true
	})
}
