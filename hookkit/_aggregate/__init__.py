"""Shared infrastructure: the multiprocess aggregate (the directory of
prometheus_client's value files, slot identities, the collector that reads
them), for every backend that exports the master's one aggregate."""
