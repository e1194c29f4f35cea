"""hookkit's core: gunicorn knowledge and plain values; it names no backend."""
