"""A Bottle app: routes with wildcards and filters, an app mounted under a
prefix, and a route that raises."""

import bottle

app = bottle.Bottle()
api = bottle.Bottle()


@app.get("/items/<item_id:int>")
def item(item_id: int) -> str:
    return f"item {item_id}\n"


@app.route("/users/<user>/items", method=["GET", "POST"])
def user_items(user: str) -> str:
    return f"items of {user}\n"


@app.get("/crash/<n:int>")
def crash(n: int) -> str:
    raise RuntimeError(f"crash {n}")


@api.get("/things/<name>")
def thing(name: str) -> str:
    return f"thing {name}\n"


app.mount("/api/", api)
