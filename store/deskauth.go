package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// DeskLogin is a review desk sign-in under way: what the callback from the
// OpenID Provider must match (state, nonce) and the PKCE verifier. Keyed by
// the SHA-256 of the browser's pre-sign-in cookie; used once.
type DeskLogin struct {
	IDHash, State, Nonce, Verifier string
	ExpiresAt                      time.Time
}

// DeskSession is a signed-in reviewer, keyed by the SHA-256 of the session
// cookie's value: any replica serves any request, and signing out deletes
// the row.
type DeskSession struct {
	IDHash    string
	Subject   string // oidc:<sub>
	Email     string // as the provider verified it
	Roles     []string
	CSRF      string
	CreatedAt time.Time
	ExpiresAt time.Time
	// LastUsedAt is when the session last served a request (CreatedAt at
	// first): the desk ends one left unused too long.
	LastUsedAt time.Time
}

// CreateDeskLogin stores a sign-in under way, and clears expired sign-ins
// and sessions.
func (s *Store) CreateDeskLogin(ctx context.Context, l DeskLogin) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if err := clearExpiredDesk(ctx, tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `
INSERT INTO desk_logins (id_hash, state, nonce, verifier, expires_at) VALUES ($1, $2, $3, $4, $5)`,
			l.IDHash, l.State, l.Nonce, l.Verifier, l.ExpiresAt.UTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: desk login: %w", classify(err))
	}
	return nil
}

// TakeDeskLogin reads and deletes a sign-in under way (it is good for one
// callback), or ErrNotFound. The caller checks its expiry.
func (s *Store) TakeDeskLogin(ctx context.Context, idHash string) (DeskLogin, error) {
	var l DeskLogin
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT id_hash, state, nonce, verifier, expires_at FROM desk_logins WHERE id_hash = $1`,
			idHash).Scan(&l.IDHash, &l.State, &l.Nonce, &l.Verifier, &l.ExpiresAt)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM desk_logins WHERE id_hash = $1`, idHash)
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return DeskLogin{}, ErrNotFound
	}
	if err != nil {
		return DeskLogin{}, fmt.Errorf("store: take desk login: %w", classify(err))
	}
	l.ExpiresAt = l.ExpiresAt.UTC()
	return l, nil
}

// CreateDeskSession stores a signed-in session; replaced, when not empty,
// is the session it replaces (the browser's previous one), deleted in the
// same transaction.
func (s *Store) CreateDeskSession(ctx context.Context, ds DeskSession, replaced string) error {
	if ds.CreatedAt.IsZero() {
		ds.CreatedAt = now()
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if replaced != "" {
			if _, err := tx.ExecContext(ctx, `DELETE FROM desk_sessions WHERE id_hash = $1`, replaced); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `
INSERT INTO desk_sessions (id_hash, subject, email, roles, csrf, created_at, expires_at, last_used_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $6)`,
			ds.IDHash, clean(ds.Subject), clean(ds.Email), joinFields(ds.Roles), ds.CSRF, ds.CreatedAt.UTC(), ds.ExpiresAt.UTC())
		return err
	})
	if err != nil {
		return fmt.Errorf("store: create desk session: %w", classify(err))
	}
	return nil
}

// DeskSessionByHash reads a session, or ErrNotFound. The caller checks its
// expiry and when it was last used.
func (s *Store) DeskSessionByHash(ctx context.Context, idHash string) (DeskSession, error) {
	var ds DeskSession
	var roles string
	var used sql.NullTime
	err := s.db.QueryRowContext(ctx, `
SELECT id_hash, subject, email, roles, csrf, created_at, expires_at, last_used_at
FROM desk_sessions WHERE id_hash = $1`,
		idHash).Scan(&ds.IDHash, &ds.Subject, &ds.Email, &roles, &ds.CSRF, &ds.CreatedAt, &ds.ExpiresAt, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return DeskSession{}, ErrNotFound
	}
	if err != nil {
		return DeskSession{}, fmt.Errorf("store: desk session: %w", classify(err))
	}
	ds.Roles, ds.CreatedAt, ds.ExpiresAt, ds.LastUsedAt = splitFields(roles), ds.CreatedAt.UTC(), ds.ExpiresAt.UTC(), used.Time.UTC()
	if !used.Valid {
		ds.LastUsedAt = ds.CreatedAt
	}
	return ds, nil
}

// TouchDeskSession records that the session served a request at at (never
// moving the time back); a session that is gone is not an error.
func (s *Store) TouchDeskSession(ctx context.Context, idHash string, at time.Time) error {
	at = at.UTC().Truncate(time.Microsecond)
	if _, err := s.db.ExecContext(ctx, `
UPDATE desk_sessions SET last_used_at = $2 WHERE id_hash = $1 AND (last_used_at IS NULL OR last_used_at < $2)`,
		idHash, at); err != nil {
		return fmt.Errorf("store: touch desk session: %w", classify(err))
	}
	return nil
}

// DeleteDeskSession ends a session (sign-out, expiry); deleting one that is
// gone is not an error.
func (s *Store) DeleteDeskSession(ctx context.Context, idHash string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM desk_sessions WHERE id_hash = $1`, idHash); err != nil {
		return fmt.Errorf("store: delete desk session: %w", classify(err))
	}
	return nil
}

// SetDeskFlash keeps a message for the session's next page.
func (s *Store) SetDeskFlash(ctx context.Context, idHash, flash string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE desk_sessions SET flash = $2 WHERE id_hash = $1`, idHash, clean(flash)); err != nil {
		return fmt.Errorf("store: desk flash: %w", classify(err))
	}
	return nil
}

// TakeDeskFlash returns and clears the session's message.
func (s *Store) TakeDeskFlash(ctx context.Context, idHash string) (string, error) {
	var flash string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `SELECT flash FROM desk_sessions WHERE id_hash = $1`, idHash).Scan(&flash)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && flash == "") {
			return nil
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE desk_sessions SET flash = '' WHERE id_hash = $1`, idHash)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("store: desk flash: %w", classify(err))
	}
	return flash, nil
}

func clearExpiredDesk(ctx context.Context, tx *sql.Tx) error {
	t := now()
	if _, err := tx.ExecContext(ctx, `DELETE FROM desk_logins WHERE expires_at < $1`, t); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM desk_sessions WHERE expires_at < $1`, t)
	return err
}
