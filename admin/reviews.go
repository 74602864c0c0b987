package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// OpenReview is one entry of GET /admin/reviews: no personal data.
type OpenReview struct {
	SessionID        string    `json:"session_id"`
	Reason           string    `json:"reason"`
	MismatchedFields []string  `json:"mismatched_fields,omitempty"`
	LastErrorCode    string    `json:"last_error_code,omitempty"`
	Attempts         int       `json:"attempts"`
	OpenedAt         time.Time `json:"opened_at"`
	AgeSeconds       int64     `json:"age_seconds"`
	DeadlineAt       time.Time `json:"deadline_at,omitzero"`
	Overdue          bool      `json:"overdue"`
}

const (
	defaultReviewLimit = 100
	maxReviewLimit     = 1000
)

// reviews answers GET /admin/reviews?status=open[&limit=N]: the open
// reviews, oldest first.
func (a *API) reviews(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if st := q.Get("status"); st != "" && st != "open" {
		reply(w, http.StatusBadRequest, map[string]string{"error": "status must be open"})
		return
	}
	limit := defaultReviewLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxReviewLimit {
			reply(w, http.StatusBadRequest, map[string]string{"error": "limit must be from 1 to 1000"})
			return
		}
		limit = n
	}
	if a.Reviews == nil {
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "the review queue is not configured"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	cases, err := a.Reviews.OpenReviews(ctx, limit)
	if err != nil {
		a.Log.Error("admin: list open reviews", "error", err)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "could not read the review queue; retry"})
		return
	}
	now := time.Now()
	if a.Now != nil {
		now = a.Now()
	}
	out := make([]OpenReview, 0, len(cases))
	for _, c := range cases {
		out = append(out, OpenReview{SessionID: c.SessionID, Reason: c.Reason, MismatchedFields: c.MismatchedFields,
			LastErrorCode: c.LastErrorCode, Attempts: c.Attempts, OpenedAt: c.OpenedAt,
			AgeSeconds: int64(now.Sub(c.OpenedAt) / time.Second), DeadlineAt: c.DeadlineAt,
			Overdue: !c.DeadlineAt.IsZero() && now.After(c.DeadlineAt)})
	}
	reply(w, http.StatusOK, map[string]any{"reviews": out})
}
