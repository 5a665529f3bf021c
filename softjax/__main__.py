"""``python -m softjax 2.3 1.1 -0.4``: compare the normalisers on a few scores.

See :mod:`softjax._cli` (``python -m softjax --help``).
"""

from __future__ import annotations

import sys

from softjax._cli import main

if __name__ == "__main__":
  sys.exit(main())
