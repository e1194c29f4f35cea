"""examples/falcon's app (imported, so that the example is what runs) plus
a responder that raises."""

from app import app  # examples/falcon/app.py, on gunicorn's --pythonpath


class Crash:
    def on_get(self, req: object, resp: object, n: int) -> None:
        raise RuntimeError(f"crash {n}")


app.add_route("/crash/{n:int}", Crash())
