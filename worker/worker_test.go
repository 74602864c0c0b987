package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.temporal.io/api/serviceerror"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Unreachable separates "Temporal did not answer" (wait) from "Temporal
// refused" (stop and say why).
func TestUnreachableIsAboutTemporalNotAnswering(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("failed reaching server: %w", serviceerror.NewUnavailable("connection refused")), true},
		{fmt.Errorf("failed reaching server: %w", serviceerror.NewDeadlineExceeded("context deadline exceeded")), true},
		{fmt.Errorf("worker: list search attributes: %w", context.DeadlineExceeded), true},
		{status.Error(codes.Unavailable, "no connection"), true},
		{serviceerror.NewResourceExhausted(0, "busy"), true},
		{serviceerror.NewNamespaceNotFound("identity"), false},
		{serviceerror.NewPermissionDenied("no", ""), false},
		{fmt.Errorf("%w on namespace %q", ErrSearchAttributesMissing, "identity"), false},
		{errors.New("failed to get executable checksum"), false},
		// Something else on the port (a frontend starting, or another
		// server while Temporal was away): wait, as for no server.
		{fmt.Errorf("failed reaching server: %w", serviceerror.NewUnimplemented("unknown service temporal.api.workflowservice.v1.WorkflowService")), true},
		{status.Error(codes.Unimplemented, "unknown service temporal.api.workflowservice.v1.WorkflowService"), true},
		{serviceerror.NewUnimplemented("method not supported by this server version"), false},
		// A proxy that serves no OperatorService: the search-attribute
		// check carries on without it, it is no reason to wait.
		{status.Error(codes.Unimplemented, "unknown service temporal.api.operatorservice.v1.OperatorService"), false},
	} {
		if got := Unreachable(c.err); got != c.want {
			t.Errorf("Unreachable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
