// Package docs holds no code: its tests hold the README and the documents
// in this folder to what the repository does. Every relative link and
// anchor resolves, the README stays a front page that links every
// document, and every command the documents show in a sh block is one a
// test runs (or, where no test can, such as `docker compose` without a
// Docker engine, is listed as such with the reason and the tests that
// stand in for it).
//
//	go test ./docs/
package docs
