"""Makes ``tests.camproto.camproto_helpers`` importable.

pytest (``prepend`` import mode, no ``__init__.py`` here, on purpose: a ``tests/camproto``
package would shadow the real ``camproto``) puts only this folder on ``sys.path``; mypy, under
the repository's ``explicit_package_bases``, names these files ``tests.camproto.*``. Importing the
shared helpers by that full name, with the repository root on ``sys.path``, suits both.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
