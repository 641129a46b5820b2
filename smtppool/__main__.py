"""``python -m smtppool``: the same as the ``smtppool`` command."""

import sys

from ._cli import main

sys.exit(main())
