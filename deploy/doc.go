// Package deploy holds no code: its tests check the deployment files at the
// repository's root (docker-compose.yml, .env.example, Dockerfile,
// .dockerignore) without a Docker engine. compose-go loads the compose file
// as `docker compose config` does, and the tests then hold it to the
// service's own contract: every variable our services get is in the
// configuration table (docs/configuration.md) and passes config.Load with
// the secrets each role needs, ports and hostnames line up, health checks
// back every depends_on, images are pinned to the versions the project is
// tested with, and the Temporal jobs register what the workflow writes.
//
//	go test ./deploy/
package deploy
