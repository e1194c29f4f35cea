"""``python -m hookkit``: the same as the ``hookkit`` command."""

import sys

from hookkit._face.cli import main

sys.exit(main())
