"""The drop-in config, for a gunicorn config file of your own making:

# hookkit.conf
from hookkit.dropin import load
globals().update(load())
"""

from hookkit._dropin.load import CONFIG_FILE_TEXT, load, user_config_path

__all__ = ["CONFIG_FILE_TEXT", "load", "user_config_path"]
