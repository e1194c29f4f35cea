"""A Pyramid app: routes with placeholders, a regular expression, a route
prefix, and a view that raises."""

from pyramid.config import Configurator
from pyramid.request import Request


def item(request: Request) -> str:
    return f"item {request.matchdict['item_id']}\n"


def user_item(request: Request) -> str:
    return f"item {request.matchdict['item_id']} of {request.matchdict['user']}\n"


def thing(request: Request) -> str:
    return f"thing {request.matchdict['name']}\n"


def crash(request: Request) -> str:
    raise RuntimeError(f"crash {request.matchdict['n']}")


def make_app() -> object:
    config = Configurator()
    config.add_route("item", "/items/{item_id}")
    config.add_route("user_item", r"/users/{user}/items/{item_id:\d+}")
    config.add_route("crash", "/crash/{n}")
    with config.route_prefix_context("api"):
        config.add_route("thing", "/things/{name}")
    config.add_view(item, route_name="item", renderer="string")
    config.add_view(user_item, route_name="user_item", renderer="string")
    config.add_view(thing, route_name="thing", renderer="string")
    config.add_view(crash, route_name="crash", renderer="string")
    return config.make_wsgi_app()


app = make_app()
