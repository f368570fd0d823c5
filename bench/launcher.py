"""`python -m bench.launcher`: the operator as its image runs it, plus bench-only switches.

The image installs the operator without its `cli` and `dev` extras, so the `kubernetes` and
`kubernetes_asyncio` clients are absent there; kopf imports them when present (+7 and +35 MB RSS).
They are hidden here for the same footprint.
The switches are in `bench.patches`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType


class _NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] in ("kubernetes", "kubernetes_asyncio"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def main() -> int:
    sys.meta_path.insert(0, _NotInTheImage())
    from bench import patches

    return patches.run()


if __name__ == "__main__":
    sys.exit(main())
