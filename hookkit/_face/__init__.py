"""The face: the ``hookkit`` command and the harness that runs a real gunicorn."""
