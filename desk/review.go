package desk

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/temporal"

	"identityverification/admin"
	"identityverification/store"
	"identityverification/stripeapi"
	"identityverification/workflows"
)

func (d *Desk) queue(w http.ResponseWriter, r *http.Request, s *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	p := d.page(s, "Open reviews")
	p.Flash = d.flash(ctx, s)
	cases, err := d.Store.DeskOpenCases(ctx, queueLimit)
	if err != nil {
		d.Log.Error("desk: list open reviews", "error", err)
		p.Error = "The database did not answer; reload in a moment."
		d.render(w, http.StatusServiceUnavailable, "queue.html", p)
		return
	}
	for _, c := range cases {
		p.Cases = append(p.Cases, d.view(c))
	}
	d.render(w, http.StatusOK, "queue.html", p)
}

func (d *Desk) flash(ctx context.Context, s *session) string {
	f, err := d.Store.TakeDeskFlash(ctx, s.IDHash)
	if err != nil {
		d.Log.Error("desk: read flash", "error", err)
	}
	return f
}

// reviewerView is what a signed-in reviewer sees of a session beyond the
// case: read at view time (Stripe, the database), never stored or logged.
type reviewerView struct {
	DashboardURL string
	Checks       []stripeapi.Check
	// Values: for a mismatch, the expected beside the verified values.
	Values  []valuePair
	Problem string // what could not be read
}

type valuePair struct {
	Field, Expected, Verified string
	Differs                   bool
}

func (d *Desk) review(w http.ResponseWriter, r *http.Request, s *session) {
	d.showReview(w, r, s, http.StatusOK, d.flash(r.Context(), s), "")
}

func (d *Desk) showReview(w http.ResponseWriter, r *http.Request, s *session, code int, flash, problem string) {
	p := d.page(s, "Review")
	p.Flash, p.Error = flash, problem
	id := r.PathValue("id")
	if !sessionID.MatchString(id) {
		p.Error = "There is no such review."
		d.render(w, http.StatusNotFound, "review.html", p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	c, err := d.Store.DeskCase(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		p.Error = "There is no such review."
		code = http.StatusNotFound
	case err != nil:
		d.Log.Error("desk: read review", "session_id", id, "error", err)
		p.Error = "The database did not answer; reload in a moment."
		code = http.StatusServiceUnavailable
	default:
		v := d.view(c)
		p.Case = &v
		p.Title = "Review of " + c.SessionID
		if v.Open {
			p.Approvals = d.approvals(ctx, id)
		}
		p.Reviewer = d.reviewerView(ctx, c)
		d.audit(r, s, store.AuditReviewView, id, store.AuditOK, "")
		if p.Trail, err = d.Store.AuditLog(ctx, store.AuditFilter{SessionID: id, Limit: auditPageLimit}); err != nil {
			d.Log.Error("desk: read the session's audit trail", "session_id", id, "error", err)
		}
		p.TrailCut = len(p.Trail) == auditPageLimit
	}
	d.render(w, code, "review.html", p)
}

// approvals says how far an open review's approvals are, from the
// workflow's state ("1 of 2 approvals, by ..."); empty when it needs one
// and has none, or the state cannot be read.
func (d *Desk) approvals(ctx context.Context, id string) string {
	v, err := d.Temporal.QueryWorkflow(ctx, workflows.WorkflowID(id), "", workflows.QueryState)
	var st workflows.State
	if err == nil {
		err = v.Get(&st)
	}
	if err != nil {
		d.Log.Warn("desk: query the review's state", "session_id", id, "error", err)
		return ""
	}
	return admin.ApprovalStatus(st.Review)
}

// reviewerView reads Stripe's report and, for a mismatch, the expected and
// verified values. Personal data: rendered into the page, nowhere else.
func (d *Desk) reviewerView(ctx context.Context, c store.DeskCase) *reviewerView {
	if d.Stripe == nil {
		return nil
	}
	v := &reviewerView{DashboardURL: stripeapi.DashboardURL(d.StripeKey, c.SessionID)}
	sv, err := d.Stripe.ReviewView(ctx, c.SessionID)
	if err != nil {
		d.Log.Warn("desk: read the session at Stripe", "session_id", c.SessionID, "error", err)
		v.Problem = "Stripe did not answer: the report and verified values are not shown; reload in a moment."
		return v
	}
	v.Checks = sv.Checks
	if c.Reason != "mismatch" {
		return v
	}
	exp, err := d.Store.Contact(ctx, c.SessionID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		d.Log.Warn("desk: read the expected values", "session_id", c.SessionID, "error", err)
		v.Problem = "The database did not answer: the expected values are not shown; reload in a moment."
		return v
	}
	for _, f := range []struct{ name, exp, got string }{
		{"first_name", exp.FirstName, sv.Verified.FirstName},
		{"last_name", exp.LastName, sv.Verified.LastName},
		{"dob", exp.DOB, sv.Verified.DOB},
	} {
		v.Values = append(v.Values, valuePair{Field: f.name, Expected: f.exp, Verified: f.got,
			Differs: slices.Contains(c.MismatchedFields, f.name)})
	}
	return v
}

func (d *Desk) decide(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if !sessionID.MatchString(id) {
		d.showReview(w, r, s, http.StatusNotFound, "", "")
		return
	}
	// Who decides is who signed in: the provider's subject (which four
	// eyes counts) and verified email. Nothing in the form can change it.
	dec := workflows.ReviewDecision{Decision: r.PostFormValue("decision"), Reviewer: s.Email, Subject: s.Subject}
	if !utf8.ValidString(dec.Decision) || len(dec.Decision) > 32 || strings.ContainsFunc(dec.Decision, workflows.Unprintable) {
		d.showReview(w, r, s, http.StatusBadRequest, "", workflows.ErrUnknownDecision.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	st, err := admin.Decide(ctx, d.Temporal, d.Store, d.Policy, id, "", dec)
	var appErr *temporal.ApplicationError
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &appErr) && appErr.Type() == workflows.ErrTypeReviewRefused:
		d.audit(r, s, store.AuditReviewDecide, id, store.AuditRefused, dec.Decision+": "+appErr.Message())
		d.showReview(w, r, s, http.StatusConflict, "", "The decision was refused: "+appErr.Message()+".")
		return
	case errors.As(err, &notFound):
		d.showReview(w, r, s, http.StatusNotFound, "", "No workflow runs for this session.")
		return
	case err != nil:
		d.Log.Error("desk: decide", "session_id", id, "error", err)
		d.audit(r, s, store.AuditReviewDecide, id, store.AuditFailed, dec.Decision)
		d.showReview(w, r, s, http.StatusServiceUnavailable, "", "Temporal did not answer; try again in a moment.")
		return
	}
	d.audit(r, s, store.AuditReviewDecide, id, store.AuditOK, dec.Decision)
	d.Log.Info("desk: review decided", "session_id", id, "decision", dec.Decision, "subject", dec.Subject)
	flash := "Decided: " + dec.Decision + ". The session is now " + string(st.Status) + "."
	if a := admin.ApprovalStatus(st.Review); a != "" {
		flash = "Your approval is recorded: " + a + ". The review waits for another person's approval."
	}
	if err := d.Store.SetDeskFlash(ctx, s.IDHash, flash); err != nil {
		d.Log.Error("desk: keep flash", "error", err)
	}
	http.Redirect(w, r, Prefix+"reviews/"+url.PathEscape(id), http.StatusSeeOther)
}

func (d *Desk) keysPage(w http.ResponseWriter, r *http.Request, s *session) {
	p := d.page(s, "API keys")
	keys, err := d.Store.APIKeys(r.Context())
	if err != nil {
		d.Log.Error("desk: list API keys", "error", err)
		p.Error = "The database did not answer; reload in a moment."
		d.render(w, http.StatusServiceUnavailable, "keys.html", p)
		return
	}
	d.audit(r, s, store.AuditDeskAdmin, "", store.AuditOK, r.URL.Path)
	p.Keys = keys
	d.render(w, http.StatusOK, "keys.html", p)
}

// auditPage shows the newest rows of the audit log, newest first, a page
// at a time: ?before=<id> shows the rows before that one.
func (d *Desk) auditPage(w http.ResponseWriter, r *http.Request, s *session) {
	p := d.page(s, "Audit log")
	f := store.AuditFilter{Limit: auditPageLimit, Before: r.URL.Query().Get("before")}
	if f.Before != "" && !auditID.MatchString(f.Before) {
		p.Error = "There is no such page of the audit log."
		d.render(w, http.StatusNotFound, "audit.html", p)
		return
	}
	rows, err := d.Store.AuditLog(r.Context(), f)
	if err != nil {
		d.Log.Error("desk: read the audit log", "error", err)
		p.Error = "The database did not answer; reload in a moment."
		d.render(w, http.StatusServiceUnavailable, "audit.html", p)
		return
	}
	d.audit(r, s, store.AuditDeskAdmin, "", store.AuditOK, r.URL.Path)
	p.Audit = rows
	if len(rows) == auditPageLimit {
		p.OlderBefore = rows[len(rows)-1].ID
	}
	d.render(w, http.StatusOK, "audit.html", p)
}

// auditID is what an audit row's id looks like (store.AppendAudit).
var auditID = regexp.MustCompile(`^[0-9]{19}-[0-9a-f]{12}$`)
