package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// APIKey is a machine's credential for the admin API. Only a hash of the
// secret is stored; the secret is shown once, when the key is made.
type APIKey struct {
	ID         string
	Name       string
	Scopes     []string
	SecretHash string // hex SHA-256 of the whole key
	CreatedAt  time.Time
	RevokedAt  time.Time // zero while the key works
}

// Revoked reports whether the key was revoked.
func (k APIKey) Revoked() bool { return !k.RevokedAt.IsZero() }

// CreateAPIKey stores a new key and, when audit is not nil, its audit row,
// in one transaction: a key is made with its row in the audit log, or not
// at all.
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey, audit *AuditRecord) error {
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now()
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `
INSERT INTO api_keys (id, name, scopes, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5)`,
			k.ID, clean(k.Name), joinFields(k.Scopes), k.SecretHash, k.CreatedAt.UTC()); err != nil {
			return err
		}
		return appendAuditTx(ctx, tx, audit)
	})
	if err != nil {
		return fmt.Errorf("store: create API key: %w", classify(err))
	}
	return nil
}

// APIKey reads a key by id, revoked or not, or ErrNotFound.
func (s *Store) APIKey(ctx context.Context, id string) (APIKey, error) {
	k, err := scanAPIKey(s.db.QueryRowContext(ctx, apiKeyColumns+` WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return APIKey{}, ErrNotFound
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("store: API key: %w", classify(err))
	}
	return k, nil
}

// APIKeys lists every key, oldest first.
func (s *Store) APIKeys(ctx context.Context) ([]APIKey, error) {
	rows, err := s.db.QueryContext(ctx, apiKeyColumns+` ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store: API keys: %w", classify(err))
	}
	defer rows.Close()
	var out []APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("store: API keys: %w", classify(err))
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: API keys: %w", classify(err))
	}
	return out, nil
}

// RevokeAPIKey revokes a key for good (revoking it again changes nothing)
// and, when audit is not nil, appends its audit row in the same
// transaction. ErrNotFound when there is no such key (and no row).
func (s *Store) RevokeAPIKey(ctx context.Context, id string, audit *AuditRecord) error {
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`, id, now())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNotFound
		}
		return appendAuditTx(ctx, tx, audit)
	})
	if errors.Is(err, ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("store: revoke API key: %w", classify(err))
	}
	return nil
}

const apiKeyColumns = `SELECT id, name, scopes, secret_hash, created_at, revoked_at FROM api_keys`

func scanAPIKey(row interface{ Scan(...any) error }) (APIKey, error) {
	var k APIKey
	var scopes string
	var revoked sql.NullTime
	if err := row.Scan(&k.ID, &k.Name, &scopes, &k.SecretHash, &k.CreatedAt, &revoked); err != nil {
		return APIKey{}, err
	}
	k.Scopes, k.CreatedAt, k.RevokedAt = splitFields(scopes), k.CreatedAt.UTC(), revoked.Time.UTC()
	if !revoked.Valid {
		k.RevokedAt = time.Time{}
	}
	return k, nil
}
