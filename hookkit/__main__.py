"""``python -m hookkit``: the same as the ``hookkit`` command."""

import sys

from hookkit._cli import main

sys.exit(main())
