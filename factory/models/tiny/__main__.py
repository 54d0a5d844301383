"""``python -m factory.models.tiny --out DIR``: see ``factory.models.tiny.writer``."""

import sys

from factory.models.tiny.writer import main

sys.exit(main())
