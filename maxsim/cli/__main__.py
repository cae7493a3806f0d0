"""``python -m maxsim.cli``: the ``maxsim`` command."""

import sys

from maxsim.cli import main

sys.exit(main())
