"""examples/falcon's routes as a Falcon ASGI app (``falcon.asgi.App``),
plus a responder that raises."""

import falcon
import falcon.asgi


class Item:
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, item_id: int
    ) -> None:
        resp.media = {"item_id": item_id}


class UserItems:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user: str) -> None:
        resp.media = {"user": user, "items": []}

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user: str
    ) -> None:
        resp.status = falcon.HTTP_201
        resp.media = {"user": user, "created": True}


class Crash:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response, n: int) -> None:
        raise RuntimeError(f"crash {n}")


app = falcon.asgi.App()
app.add_route("/items/{item_id:int}", Item())
app.add_route("/users/{user}/items", UserItems())
app.add_route("/crash/{n:int}", Crash())
