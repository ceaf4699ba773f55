"""Makes ``tests.dmtproto.dmtproto_helpers`` importable.

As in tests/camproto: pytest (``prepend`` import mode, no ``__init__.py`` here, on purpose: a
``tests/dmtproto`` package would shadow the real ``dmtproto``) puts only this folder on
``sys.path``; importing the helpers by their full name with the repository root on ``sys.path``
suits both pytest and mypy.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
