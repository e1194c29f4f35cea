"""One package per backend. Each is usable alone; none imports another."""
