"""Shared infrastructure: the master's HTTP server (fork guard, SIGUSR2
hand-over, Prometheus web config: TLS and basic auth)."""
