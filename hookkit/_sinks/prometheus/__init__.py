"""The Prometheus sink: multiprocess-correct metrics served by the master."""
