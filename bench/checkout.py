"""Running a given checkout's code. `embedserve` is an editable install of one
checkout: a process started in another one (a git worktree, a clone kept for a
before/after) would still import the installed code. A folder holding one link,
`embedserve` -> that checkout, put first on PYTHONPATH, makes it import its own."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

# Where the bench keeps its link folders.
LINKS_DIR = Path(tempfile.gettempdir()) / "embedserve-bench-checkouts"


def imported_root() -> Path | None:
    """The checkout `import embedserve` reads here."""
    spec = importlib.util.find_spec("embedserve.launcher")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve().parent


def import_root_for(tree: Path, links_dir: Path) -> Path | None:
    """A folder to put first on PYTHONPATH so that `embedserve` is `tree`'s code
    (made under `links_dir`); None when it already is."""
    tree = tree.resolve()
    if imported_root() == tree:
        return None
    link_root = links_dir / f"pyroot-{hashlib.sha1(str(tree).encode()).hexdigest()[:12]}"
    link_root.mkdir(parents=True, exist_ok=True)
    link = link_root / "embedserve"
    if not link.is_symlink():
        link.symlink_to(tree)
    return link_root


def use_checkout(tree: Path, links_dir: Path) -> None:
    """Make this process, and every process it starts, import `tree`'s `embedserve`
    (a no-op where it already does). Call it before anything imports `embedserve`."""
    link_root = import_root_for(tree, links_dir)
    if link_root is None:
        return
    sys.path.insert(0, str(link_root))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(link_root), os.environ.get("PYTHONPATH")]))
    for name in [m for m in sys.modules if m == "embedserve" or m.startswith("embedserve.")]:
        del sys.modules[name]
