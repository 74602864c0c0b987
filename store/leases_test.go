package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"identityverification/store"
	"identityverification/store/storetest"
)

func TestLeases(t *testing.T) {
	for _, db := range storetest.Databases(t) {
		t.Run(db.Name, func(t *testing.T) {
			ctx := context.Background()
			st, err := store.Open(ctx, db.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
			const ttl = 30 * time.Second
			try := func(holder string, at time.Time) bool {
				t.Helper()
				ok, err := st.AcquireLease(ctx, "job", holder, ttl, at)
				if err != nil {
					t.Fatal(err)
				}
				return ok
			}
			if _, _, err := st.LeaseHolder(ctx, "job"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("a lease nobody took: %v; want ErrNotFound", err)
			}
			if !try("a", t0) {
				t.Fatal("a free lease was not taken")
			}
			if try("b", t0.Add(time.Second)) {
				t.Error("b took a lease a holds")
			}
			if !try("a", t0.Add(20*time.Second)) {
				t.Error("a could not renew its lease")
			}
			if h, exp, err := st.LeaseHolder(ctx, "job"); err != nil || h != "a" || !exp.Equal(t0.Add(50*time.Second)) {
				t.Errorf("holder %q until %v, %v; want a until %v", h, exp, err, t0.Add(50*time.Second))
			}
			if try("b", t0.Add(49*time.Second)) {
				t.Error("b took the renewed lease before it lapsed")
			}
			if !try("b", t0.Add(51*time.Second)) {
				t.Error("b did not take over a lapsed lease")
			}
			if try("a", t0.Add(52*time.Second)) {
				t.Error("a took back a lease b holds")
			}
			// Releasing: only the holder's release counts.
			if err := st.ReleaseLease(ctx, "job", "a"); err != nil {
				t.Fatal(err)
			}
			if h, _, _ := st.LeaseHolder(ctx, "job"); h != "b" {
				t.Errorf("a's release took b's lease (holder %q)", h)
			}
			if err := st.ReleaseLease(ctx, "job", "b"); err != nil {
				t.Fatal(err)
			}
			if !try("a", t0.Add(53*time.Second)) {
				t.Error("a released lease was not taken")
			}
			// Another lease's name is another lease.
			if ok, err := st.AcquireLease(ctx, "other", "b", ttl, t0.Add(53*time.Second)); err != nil || !ok {
				t.Errorf("another lease: %v, %v", ok, err)
			}
			// Many replicas trying at once, past expiry: one wins.
			var wins sync.Map
			var wg sync.WaitGroup
			at := t0.Add(time.Hour)
			for _, h := range []string{"r1", "r2", "r3", "r4", "r5", "r6"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok, err := st.AcquireLease(ctx, "job", h, ttl, at)
					if err != nil {
						t.Error(err)
					}
					if ok {
						wins.Store(h, true)
					}
				}()
			}
			wg.Wait()
			n := 0
			wins.Range(func(any, any) bool { n++; return true })
			if n != 1 {
				t.Errorf("%d replicas took the lease at once; want 1", n)
			}
		})
	}
}
