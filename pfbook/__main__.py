"""``python -m pfbook`` is the ``pfbook`` command."""
import sys

from pfbook.cli import main

sys.exit(main())
