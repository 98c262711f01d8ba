"""End-to-end throughput benchmark: in-process sentence-transformers versus embedserve.

Run as `python -m bench --help`. The baseline and the server embed exactly the same
seeded corpus, so their texts/s are directly comparable.
"""

from __future__ import annotations

from pathlib import Path

from bench.checkout import LINKS_DIR, use_checkout

# The in-process benches (int8_recipes, issue16, gpu_check, query_placement) import
# embedserve themselves: from a git worktree, that must be the worktree's code.
use_checkout(Path(__file__).resolve().parent.parent, LINKS_DIR)
