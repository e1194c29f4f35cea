"""The composition root: which sinks exist, in which order, and the user's
gunicorn config loaded and chained."""


def configure_from_environment() -> None:
    """No configuration yet when the first hook runs (single hooks imported
    into a user's config): the environment's settings and hookkit's sinks.
    The sinks are imported only now, so importing ``hookkit.hooks`` is cheap."""
    from hookkit._dropin.assemble import configure_from_environment as configure

    configure()
