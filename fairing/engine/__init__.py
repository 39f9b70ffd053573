"""The one Docker/Podman adapter: which engine to talk to (discover), a client for it with a cheap
API-version choice, and the container verbs the local deployers and the docker builder share
(containers: ensure_image, create/start, logs, state, wait), and its one error type (errors:
EngineFailure, so callers never recognise docker or requests exceptions themselves). Nothing here
imports `docker` until a function that needs it is called, so importing this package is free."""
