package admin

import (
	"cmp"
	"context"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"identityverification/store"
)

// AuditEntry is one row of GET /admin/audit.
type AuditEntry struct {
	ID        string    `json:"id"`
	At        time.Time `json:"at"`
	Actor     string    `json:"actor"`
	ActorName string    `json:"actor_name,omitempty"`
	Action    string    `json:"action"`
	SessionID string    `json:"session_id,omitempty"`
	Source    string    `json:"source,omitempty"`
	Result    string    `json:"result"`
	Detail    string    `json:"detail,omitempty"`
}

// AuditPage is the answer of GET /admin/audit.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	// NextBefore, when the page is full, reads the older rows:
	// before=NextBefore.
	NextBefore string `json:"next_before,omitempty"`
}

// auditID is what an audit row's id looks like (store.AppendAudit).
var auditID = regexp.MustCompile(`^[0-9]{19}-[0-9a-f]{12}$`)

// auditLog answers GET
// /admin/audit?session=vs_...&since=RFC3339&before=ID&limit=N: the newest
// rows that match, newest first (limit 1-1000, default 1000). When the
// page is full, next_before is the id to pass as before for the page
// after it (older rows); since bounds how far back.
func (a *API) auditLog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.AuditFilter{SessionID: q.Get("session"), Before: q.Get("before")}
	if f.SessionID != "" && !sessionID.MatchString(f.SessionID) {
		reply(w, http.StatusBadRequest, map[string]string{"error": "session must be a VerificationSession id (vs_...)"})
		return
	}
	if f.Before != "" && !auditID.MatchString(f.Before) {
		reply(w, http.StatusBadRequest, map[string]string{"error": "before must be an entry's id, as an answer's next_before gives it"})
		return
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": "since must be an RFC 3339 time such as 2026-12-01T09:00:00Z"})
			return
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxAuditRows {
			reply(w, http.StatusBadRequest, map[string]string{"error": "limit must be from 1 to 1000"})
			return
		}
		f.Limit = n
	}
	if a.Audit == nil {
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "the audit log is not configured"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	rows, err := a.Audit.AuditLog(ctx, f)
	if err != nil {
		a.Log.Error("admin: read the audit log", "error", err)
		reply(w, http.StatusServiceUnavailable, map[string]string{"error": "could not read the audit log; retry"})
		return
	}
	page := AuditPage{Entries: make([]AuditEntry, 0, len(rows))}
	for _, e := range rows {
		page.Entries = append(page.Entries, AuditEntry{ID: e.ID, At: e.At, Actor: e.Actor, ActorName: e.ActorName, Action: e.Action,
			SessionID: e.SessionID, Source: e.Source, Result: e.Result, Detail: e.Detail})
	}
	if limit := cmp.Or(f.Limit, store.MaxAuditRows); len(rows) == limit {
		page.NextBefore = rows[len(rows)-1].ID
	}
	reply(w, http.StatusOK, page)
}
