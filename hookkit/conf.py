"""The drop-in gunicorn config module: ``gunicorn -c python:hookkit.conf app:app``.

Applies your ``./gunicorn.conf.py`` (or ``$HOOKKIT_GUNICORN_CONFIG``) and runs
hookkit's hooks beside yours; see ``hookkit._dropin.load``.
"""

from hookkit._dropin.load import load as _load

globals().update(_load(forget_module=__name__))
