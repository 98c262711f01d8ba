"""End-to-end throughput benchmark: in-process sentence-transformers versus embedserve.

Run as `python -m bench --help`. The baseline and the server embed exactly the same
seeded corpus, so their texts/s are directly comparable.
"""

from __future__ import annotations
