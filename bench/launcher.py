"""`python -m bench.launcher`: the operator as its image runs it, plus bench-only switches.

The image installs the operator without its dev extras, so the `kubernetes` client is absent
there; kopf imports it when present (+7 MB RSS). It is hidden here for the same footprint.
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
        if name == "kubernetes" or name.startswith("kubernetes."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def main() -> int:
    sys.meta_path.insert(0, _NotInTheImage())
    from bench import patches

    return patches.run()


if __name__ == "__main__":
    sys.exit(main())
