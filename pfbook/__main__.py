"""``python -m pfbook`` is the ``pfbook`` command."""

import sys

from pfbook.book.cli import main

sys.exit(main())
