// Package workflows holds the durable verification workflow, one per Stripe
// Identity VerificationSession, and (in this file) the contract that the
// webhook, the admin API, the worker and the tests share.
//
// Everything in this file travels through Temporal's history, so it carries
// identifiers, statuses and error codes only: never names, dates of birth,
// email addresses, verified outputs or session URLs.
package workflows

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
)

// TaskQueue is the Temporal task queue the worker polls and the webhook starts on.
const TaskQueue = "identity-verification"

// WorkflowIDPrefix prefixes the Stripe VerificationSession id in a workflow id.
const WorkflowIDPrefix = "identity-verification-"

// WorkflowID is the id of the one workflow that owns a VerificationSession.
func WorkflowID(sessionID string) string { return WorkflowIDPrefix + sessionID }

// WorkflowName is the registered name of the verification workflow.
const WorkflowName = "IdentityVerification"

// Names of the workflow's message handlers.
const (
	// SignalEvent delivers one Stripe event (payload: Event).
	SignalEvent = "stripe-event"
	// QueryState answers the workflow's State.
	QueryState = "state"
	// UpdateReviewDecision records a reviewer's decision (payload: ReviewDecision,
	// result: State).
	UpdateReviewDecision = "review-decision"
)

// Stripe event types this service routes to the workflow.
const (
	EventTypePrefix             = "identity.verification_session."
	EventCreated                = EventTypePrefix + "created"
	EventProcessing             = EventTypePrefix + "processing"
	EventRequiresInput          = EventTypePrefix + "requires_input"
	EventVerified               = EventTypePrefix + "verified"
	EventCanceled               = EventTypePrefix + "canceled"
	EventRedacted               = EventTypePrefix + "redacted"
	StripeObjectVerifySession   = "identity.verification_session"
	StripeStatusRequiresInput   = "requires_input"
	StripeStatusProcessing      = "processing"
	StripeStatusVerified        = "verified"
	StripeStatusCanceled        = "canceled"
	StripeSessionTypeIDNumber   = "id_number"
	defaultAlternateSessionType = StripeSessionTypeIDNumber
)

// Event is the signal payload: the few fields of a Stripe event this service
// reads. It deliberately omits metadata, verified outputs, URLs, client
// secrets and client_reference_id (businesses sometimes put an email address
// there; the admin API's registration carries it to the database instead).
type Event struct {
	ID        string `json:"id"`         // evt_...
	Type      string `json:"type"`       // identity.verification_session.*
	Created   int64  `json:"created"`    // Unix seconds, Stripe's clock
	Livemode  bool   `json:"livemode"`   // false for test-mode events
	SessionID string `json:"session_id"` // vs_...
	// Status is data.object.status (requires_input, processing, verified, canceled).
	Status string `json:"status,omitempty"`
	// HasLastError tells a last_error with a null code from no last_error at all.
	HasLastError    bool   `json:"has_last_error,omitempty"`
	LastErrorCode   string `json:"last_error_code,omitempty"`
	LastErrorReason string `json:"last_error_reason,omitempty"`
	APIVersion      string `json:"api_version,omitempty"`
	// SessionType is data.object.type (document, id_number): it tells which
	// verification method a failed attempt belongs to, whenever it arrives.
	SessionType string `json:"session_type,omitempty"`
}

// Failure reports whether the event is a failed attempt: a requires_input
// with a last_error.
func (e Event) Failure() bool { return e.Type == EventRequiresInput && e.HasLastError }

// ErrorCode is the failure's last_error code; a null code is a generic
// failure, "unspecified".
func (e Event) ErrorCode() string {
	if e.LastErrorCode == "" {
		return CodeUnspecified
	}
	return e.LastErrorCode
}

// CodeUnspecified stands for a last_error whose code is null.
const CodeUnspecified = "unspecified"

// Status is where a session stands, as this service sees it. The first five
// mirror Stripe's; the others are this service's own outcomes.
type Status string

const (
	StatusNew           Status = "new"
	StatusCreated       Status = "created"
	StatusProcessing    Status = "processing"
	StatusRequiresInput Status = "requires_input"
	StatusVerified      Status = "verified"
	StatusCanceled      Status = "canceled"
	StatusInReview      Status = "in_review"
	StatusRejected      Status = "rejected"
	StatusExpired       Status = "expired"
	StatusRedacted      Status = "redacted"
)

// Final reports whether no Stripe event can move the session on any more
// (only a redaction still purges its data).
func (s Status) Final() bool {
	switch s {
	case StatusVerified, StatusCanceled, StatusRejected, StatusExpired, StatusRedacted:
		return true
	}
	return false
}

// Escalation is the rung of the escalation ladder a session is on.
type Escalation string

const (
	EscalationNone      Escalation = "none"
	EscalationAlternate Escalation = "alternate_method"
	EscalationReview    Escalation = "manual_review"
)

// EscalationPolicy says what happens when a user's attempts run out or an error
// cannot be fixed by a retry.
type EscalationPolicy string

const (
	// PolicyReview opens a manual review case at once.
	PolicyReview EscalationPolicy = "review"
	// PolicyAlternate offers the alternate method; when that fails too the
	// session is rejected.
	PolicyAlternate EscalationPolicy = "alternate"
	// PolicyAlternateThenReview offers the alternate method, then manual review.
	PolicyAlternateThenReview EscalationPolicy = "alternate_then_review"
)

// Valid reports whether p is a known policy.
func (p EscalationPolicy) Valid() bool {
	switch p {
	case PolicyReview, PolicyAlternate, PolicyAlternateThenReview:
		return true
	}
	return false
}

// Policy is fixed in the workflow input when a session's workflow starts, so a
// configuration change never alters a running workflow's decisions.
type Policy struct {
	MaxAttempts          int           `json:"max_attempts"`
	AlternateMaxAttempts int           `json:"alternate_max_attempts"`
	AlternateType        string        `json:"alternate_type"`
	ReminderAfter        time.Duration `json:"reminder_after"`
	ExpireAfter          time.Duration `json:"expire_after"`
	// ExpiryWarning is how long before the expiry the user is warned that
	// the session closes (0: a day, or halfway from the reminder to the
	// expiry when that is shorter; negative: no warning).
	ExpiryWarning  time.Duration `json:"expiry_warning,omitempty"`
	ReviewDeadline time.Duration `json:"review_deadline"`
	// NonRetryableCodes are last_error codes no retry can fix: they escalate
	// at once instead of counting an attempt against the limit.
	NonRetryableCodes []string `json:"non_retryable_codes"`
	// Escalation is the default ladder; EscalationByCode overrides it per
	// Stripe last_error code.
	Escalation       EscalationPolicy            `json:"escalation"`
	EscalationByCode map[string]EscalationPolicy `json:"escalation_by_code,omitempty"`
	// EventsPerRun bounds the events one run handles before it continues as
	// new, on top of Temporal's own suggestion. Zero means no bound.
	EventsPerRun int `json:"events_per_run,omitempty"`
	// LateFraud says what a non-retryable code does when it arrives after
	// the session closed as verified: LateFraudReview (the default) reopens
	// the session as a manual review, LateFraudRecord only records it.
	LateFraud LateFraudPolicy `json:"late_fraud,omitempty"`
	// ReviewApprovalsHighRisk is how many distinct people must approve a
	// high-risk review (one opened for a fraud code or a name or date of
	// birth mismatch) before it is approved (REVIEW_APPROVALS_HIGH_RISK;
	// 0: DefaultHighRiskApprovals). Other reviews need one; a reject
	// always needs one.
	ReviewApprovalsHighRisk int `json:"review_approvals_high_risk,omitempty"`
}

// DefaultHighRiskApprovals is REVIEW_APPROVALS_HIGH_RISK's default: four eyes.
const DefaultHighRiskApprovals = 2

// FraudCodes are the last_error codes that signal fraud: a review one of
// them opened is high-risk (it needs ReviewApprovalsHighRisk approvals).
var FraudCodes = []string{"selfie_manipulated"}

// policyDurations name Policy's durations in JSON, where they are Go
// duration strings ("24h0m0s"): ops read them in the Temporal UI, where
// nanoseconds (what inputs held before) read as noise. Decoding takes
// either.
var policyDurations = []string{"reminder_after", "expire_after", "expiry_warning", "review_deadline"}

// MarshalJSON writes the durations as Go duration strings.
func (p Policy) MarshalJSON() ([]byte, error) {
	type plain Policy
	b, err := json.Marshal(plain(p))
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for _, k := range policyDurations {
		if raw, ok := m[k]; ok {
			var d jsonDuration
			if err := d.UnmarshalJSON(raw); err != nil {
				return nil, err
			}
			m[k], _ = d.MarshalJSON()
		}
	}
	return json.Marshal(m) // keys sorted: the same policy always reads the same
}

// UnmarshalJSON reads durations written as strings or as nanoseconds.
func (p *Policy) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, k := range policyDurations {
		if raw, ok := m[k]; ok {
			var d jsonDuration
			if err := d.UnmarshalJSON(raw); err != nil {
				return fmt.Errorf("policy: %s: %w", k, err)
			}
			m[k], _ = json.Marshal(int64(d))
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	type plain Policy
	return json.Unmarshal(b, (*plain)(p))
}

// jsonDuration is a duration in JSON: written as "24h0m0s", read from that
// or from a number of nanoseconds.
type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		dur, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = jsonDuration(dur)
		return nil
	}
	var ns int64 // exactly, as written before durations were strings
	if err := json.Unmarshal(b, &ns); err != nil {
		return fmt.Errorf("duration: want a string such as \"24h0m0s\" or nanoseconds, got %.40s", b)
	}
	*d = jsonDuration(ns)
	return nil
}

// LateFraudPolicy is the LATE_FRAUD_POLICY setting.
type LateFraudPolicy string

const (
	LateFraudReview LateFraudPolicy = "review"
	LateFraudRecord LateFraudPolicy = "record"
)

// Valid reports whether p is a known late-fraud policy.
func (p LateFraudPolicy) Valid() bool { return p == LateFraudReview || p == LateFraudRecord }

// DefaultPolicy is the policy when configuration says nothing.
func DefaultPolicy() Policy {
	return Policy{
		MaxAttempts:          3,
		AlternateMaxAttempts: 2,
		AlternateType:        defaultAlternateSessionType,
		ReminderAfter:        24 * time.Hour,
		ExpireAfter:          7 * 24 * time.Hour,
		ReviewDeadline:       48 * time.Hour,
		// under_supported_age: the user will not be old enough on a retry.
		// country_not_supported: the document's country stays the same.
		// selfie_manipulated: a fraud signal; retries would let it iterate.
		// Not here, because a retry can fix them: device_not_supported
		// (another device), document_type_not_supported (another document),
		// consent_declined (the user may change their mind), abandoned, and
		// the *_unverified_other and *_mismatch codes.
		NonRetryableCodes: []string{"under_supported_age", "country_not_supported", "selfie_manipulated"},
		Escalation:        PolicyAlternateThenReview,
		EscalationByCode: map[string]EscalationPolicy{
			// An alternate document does not make the user older or move
			// their country: only a person can decide.
			"under_supported_age":   PolicyReview,
			"country_not_supported": PolicyReview,
			"selfie_manipulated":    PolicyReview,
		},
		EventsPerRun: 1000,
		LateFraud:    LateFraudReview,
	}
}

// Retryable reports whether a retry by the user can fix a last_error code.
// An unknown or null code is a generic failure: retryable.
func (p Policy) Retryable(code string) bool {
	return !slices.Contains(p.NonRetryableCodes, code)
}

// EscalationFor is the ladder for a last_error code.
func (p Policy) EscalationFor(code string) EscalationPolicy {
	if e, ok := p.EscalationByCode[code]; ok {
		return e
	}
	return p.Escalation
}

// Input starts (or continues) a verification workflow.
type Input struct {
	SessionID string `json:"session_id"`
	Policy    Policy `json:"policy"`
	// Carried is set only by continue-as-new: the state of the previous run.
	Carried *State `json:"carried,omitempty"`
}

// Review is a manual review case as the workflow knows it.
type Review struct {
	// Reason: attempts_exhausted, non_retryable:<code> (also when the code
	// came after the session was verified), or mismatch.
	Reason string `json:"reason"`
	// MismatchedFields names the verified outputs that differed (never values).
	MismatchedFields []string  `json:"mismatched_fields,omitempty"`
	OpenedAt         time.Time `json:"opened_at"`
	DeadlineAt       time.Time `json:"deadline_at"`
	// CodeCreated is Stripe's `created` of the failure whose non-retryable
	// code opened the review (0 for other reasons).
	CodeCreated int64 `json:"code_created,omitempty"`
	Overdue     int   `json:"overdue,omitempty"` // ops notices sent
	// ApprovalsNeeded is how many distinct subjects must approve (0 in a
	// review opened before four eyes: one).
	ApprovalsNeeded int `json:"approvals_needed,omitempty"`
	// Approvals are the approvals given so far, oldest first, while the
	// review waits for more; the last one decides.
	Approvals []Approval `json:"approvals,omitempty"`
	Decision  string     `json:"decision,omitempty"`
	Reviewer  string     `json:"reviewer,omitempty"`
	// Subject is the authenticated principal who decided (see
	// ReviewDecision.Subject).
	Subject   string    `json:"subject,omitempty"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
}

// Approval is one person's approval of a review that needs several.
type Approval struct {
	Subject  string    `json:"subject"`
	Reviewer string    `json:"reviewer"`
	At       time.Time `json:"at"`
}

// Open reports whether the case waits for a decision.
func (r *Review) Open() bool { return r != nil && r.Decision == "" }

// Review decisions.
const (
	DecisionApprove = "approve"
	DecisionReject  = "reject"
	// DecisionClosed ends a review nobody decided (the session was redacted).
	DecisionClosed = "closed"
	// DecisionSuperseded ends a review a non-retryable code opened when
	// Stripe verified the user after that code (LATE_FRAUD_POLICY=record).
	DecisionSuperseded = "superseded"
)

// ErrTypeReviewRefused is the type of the application error with which the
// review update refuses a decision (no open review, unknown decision, bad
// reviewer); its message says why.
const ErrTypeReviewRefused = "ReviewRefused"

// Reviewer bounds: an ops identifier (a username, a work email address as
// the OpenID Provider verified it), not free text.
const MaxReviewerLen = 254

// ReviewDecision is the UpdateReviewDecision payload. It has no free-text
// note on purpose: update arguments are kept in workflow history, which must
// not hold a verified user's personal data.
type ReviewDecision struct {
	Decision string `json:"decision"` // approve or reject
	// Reviewer names who decided, for people: the email address the OpenID
	// Provider verified (review desk), or what a machine caller says (admin
	// API).
	Reviewer string `json:"reviewer"`
	// Subject is the authenticated principal that sent the decision, which
	// four eyes counts: "oidc:<sub>" for a person signed in at the review
	// desk, "key:<id>" for a scoped API key, SubjectAdminToken for
	// ADMIN_TOKEN. Empty (a caller from before): the reviewer.
	Subject string `json:"subject,omitempty"`
	// Voucher is the id of the voucher the admin API or the review desk
	// wrote when it authenticated Subject (store.DecisionVoucher). A review
	// opened on workflow v3 takes only vouched decisions: one sent to
	// Temporal by anyone else names nobody authenticated.
	Voucher string `json:"voucher,omitempty"`
}

// SubjectAdminToken is the subject of decisions sent with ADMIN_TOKEN.
const SubjectAdminToken = "token:admin"

// MaxSubjectLen bounds a subject: "oidc:" and the provider's sub (at most
// 255 characters by OpenID Connect Core).
const MaxSubjectLen = 300

// State is what the `state` query answers, what continue-as-new carries and,
// without ProcessedEventIDs (the database's ledger keeps those), the snapshot
// stored with every transition, from which a fresh run restores exactly. It
// is the one shape of a session's progress.
type State struct {
	SessionID       string     `json:"session_id"`
	Status          Status     `json:"status"`
	StripeStatus    string     `json:"stripe_status,omitempty"`
	SessionType     string     `json:"session_type,omitempty"`
	Attempts        int        `json:"attempts"`
	LastErrorCode   string     `json:"last_error_code,omitempty"`
	LastErrorReason string     `json:"last_error_reason,omitempty"`
	Escalation      Escalation `json:"escalation"`
	// AlternateAttempts counts failures of the alternate method.
	AlternateAttempts int `json:"alternate_attempts,omitempty"`
	// LastErrorCreated and LastErrorEventID name the failure LastErrorCode
	// comes from: the newest by Stripe's `created` (then by id), whatever
	// order the failures arrived in.
	LastErrorCreated int64  `json:"last_error_created,omitempty"`
	LastErrorEventID string `json:"last_error_event_id,omitempty"`
	// AlternateSince is when the session switched to the alternate method
	// (Unix seconds): a failure created before it belongs to the first
	// method when its event does not name its type.
	AlternateSince int64   `json:"alternate_since,omitempty"`
	Review         *Review `json:"review,omitempty"`
	// NextTimer names the pending durable timer (reminder, expiry,
	// review_deadline) and NextTimerAt when it fires.
	NextTimer   string    `json:"next_timer,omitempty"`
	NextTimerAt time.Time `json:"next_timer_at,omitzero"`
	// Timers: zero means not armed.
	ReminderAt time.Time `json:"reminder_at,omitzero"`
	WarningAt  time.Time `json:"warning_at,omitzero"` // the warning before expiry
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	// Seq counts the persisted transitions; it orders database writes.
	Seq int64 `json:"seq"`
	// LastEventCreated is the newest Stripe `created` applied.
	LastEventCreated int64 `json:"last_event_created,omitempty"`
	Redacted         bool  `json:"redacted,omitempty"`
	// ProcessedEventIDs are the Stripe event ids already applied, oldest first.
	ProcessedEventIDs []string `json:"processed_event_ids,omitempty"`
	// EmailIssue tells ops why the last email that did not go out did not
	// (no contact registered, recipient refused); empty when every email
	// went out.
	EmailIssue string `json:"email_issue,omitempty"`
	// Issues are the problems ops must see, also listed in the
	// VerificationIssues search attribute: transient ones (an SMTP, database
	// or Stripe outage past a few retries) clear themselves when the outage
	// ends; permanent ones (a refused recipient, a write the database
	// refused) stay as a record.
	Issues []Issue `json:"issues,omitempty"`
	// Owed lists what the session still owes the outside world (emails, a
	// Stripe cancel), oldest first; the workflow does them in order without
	// holding up its decisions.
	Owed []Effect `json:"owed,omitempty"`
	// Comparing is the verified event whose outputs are being compared with
	// the expected values (the comparison waits for Stripe; nothing else
	// does).
	Comparing *Event `json:"comparing,omitempty"`
	// Runs counts this workflow's continue-as-new generations.
	Runs int `json:"runs,omitempty"`

	// FirstType is the Stripe session type (document, id_number) of the
	// first method, from the first event that named one: a failure of this
	// type after a switch belongs to the first method.
	FirstType string `json:"first_type,omitempty"`
	// RetryLink is the lane of the newest email sent with a retry link: a
	// link for that lane and attempt (or a newer one) opens the session
	// while it waits for the user. Nil before workflow v3: the attempt
	// count decides.
	RetryLink *RetryLane `json:"retry_link,omitempty"`
	// ExpiredAt is when this service expired the session.
	ExpiredAt time.Time `json:"expired_at,omitzero"`
	// StripeRetries counts the times in a row a step that needs Stripe's
	// answer (an expiry, the processing watchdog) could not have it: each
	// waits twice as long before asking again.
	StripeRetries int `json:"stripe_retries,omitempty"`
	// WatchdogAt is when a session still processing asks Stripe where it
	// stands (armed while the status is processing).
	WatchdogAt time.Time `json:"watchdog_at,omitzero"`
	// StaleEmailsDropped counts the progress emails (failure, reminder,
	// warning, alternate offer) not sent because the session had moved on
	// to an outcome by the time they could go.
	StaleEmailsDropped int `json:"stale_emails_dropped,omitempty"`
	// Policy is the policy the session runs under, kept with every stored
	// state so a restored run keeps it whichever process starts it.
	Policy *Policy `json:"policy,omitempty"`
}

// RetryLane names the attempt a retry link opens: the method (first or
// alternate) and how many of its attempts had failed when it was sent.
type RetryLane struct {
	Alternate bool `json:"alternate,omitempty"`
	Attempt   int  `json:"attempt"`
}

// ChangeWorkflowV3 is the workflow.GetVersion change id of workflow v3
// (only Stripe decides against a user; every user keeps a working retry
// link; stale emails dropped; four eyes): asked once when a run starts, so
// a run started on the code before it keeps the old behaviour to its end.
const ChangeWorkflowV3 = "workflow-v3"

// Issue is one problem shown to ops.
type Issue struct {
	Code   string    `json:"code"`   // one of the Issue* constants
	Detail string    `json:"detail"` // the error, without personal data
	Since  time.Time `json:"since"`
}

// Issue codes.
const (
	IssueEmailDelayed        = "email_delayed"        // SMTP failing; the email retries
	IssueEmailRefused        = "email_refused"        // the recipient was refused for good
	IssueEmailFailed         = "email_failed"         // an email could not be made or recorded, for good
	IssueDatabaseUnavailable = "database_unavailable" // the database is failing; the write retries
	IssueDatabaseRejected    = "database_rejected"    // the database refused a write for good
	IssueStripeUnavailable   = "stripe_unavailable"   // the Stripe API is failing; the call retries
	// IssueStripeUnauthorized: Stripe refuses the service's key (401/403,
	// an expired or rotated key): a deployment fault, retried until mended.
	IssueStripeUnauthorized = "stripe_unauthorized"
	// IssueStripeRefused: Stripe refused a cancel for a reason other than
	// the session being canceled or verified already.
	IssueStripeRefused = "stripe_refused"
)

// Effect is one thing a session owes the outside world.
type Effect struct {
	Email *Email `json:"email,omitempty"`
	// CancelSession cancels the session at Stripe (escalation, expiry).
	CancelSession bool `json:"cancel_session,omitempty"`
}

// Email is an email a session owes the user or ops: its kind and what the
// template needs that the workflow knows (codes, counts, field names); the
// address and name are read from the database when it goes.
type Email struct {
	SessionID string `json:"session_id"`
	Kind      string `json:"kind"`
	// Ref tells repeats of a kind apart ("document-2", "alternate-id_number-1",
	// the n-th overdue notice); with the session and kind it makes the
	// email's idempotency key.
	Ref         string    `json:"ref,omitempty"`
	Attempt     int       `json:"attempt,omitempty"`
	MaxAttempts int       `json:"max_attempts,omitempty"`
	Reason      string    `json:"reason,omitempty"` // Stripe's last_error.reason or a review reason
	Fields      []string  `json:"fields,omitempty"` // mismatched field names
	Deadline    time.Time `json:"deadline,omitzero"`
	// Link is the lane the email's retry link opens (emails with a link);
	// nil in emails owed before workflow v3.
	Link *RetryLane `json:"link,omitempty"`
}

// Typed search attributes the workflow keeps current. They must be registered
// on the namespace before a worker runs (see SearchAttributes).
var (
	SAStatus        = temporal.NewSearchAttributeKeyKeyword("VerificationStatus")
	SAAttempts      = temporal.NewSearchAttributeKeyInt64("VerificationAttempts")
	SALastErrorCode = temporal.NewSearchAttributeKeyKeyword("VerificationLastErrorCode")
	SAEscalation    = temporal.NewSearchAttributeKeyKeyword("VerificationEscalation")
	// SAIssues lists the codes of the session's open Issues, so ops can
	// find every session with a problem: `VerificationIssues = 'email_delayed'`.
	SAIssues = temporal.NewSearchAttributeKeyKeywordList("VerificationIssues")
)

// SearchAttributes lists the custom search attributes and their Temporal types,
// for registration with `temporal operator search-attribute create`.
var SearchAttributes = []struct{ Name, Type string }{
	{SAStatus.GetName(), "Keyword"},
	{SAAttempts.GetName(), "Int"},
	{SALastErrorCode.GetName(), "Keyword"},
	{SAEscalation.GetName(), "Keyword"},
	{SAIssues.GetName(), "KeywordList"},
}
