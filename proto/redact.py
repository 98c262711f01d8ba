"""Keep the launcher's secrets out of what other local users can read.

`/proc/<pid>/cmdline` is world-readable; `/proc/<pid>/environ` is readable by
the process's owner only. So: configuration, the API key included, reaches a
child over its stdin pipe (proto/child.py), never argv; children get an
environment without secrets (the launcher alone resolves the model, so no child
needs a Hub token); and the launcher overwrites the secrets the user typed on
its own command line as soon as the flags are parsed.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

logger = logging.getLogger(__name__)

# Environment variables no child reads and no other process may see.
SECRET_ENV_VARS = frozenset({"API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN"})
# Fields of /proc/<pid>/stat (1-based, see proc(5)) bounding the argv strings.
_ARG_START_FIELD, _ARG_END_FIELD = 48, 49


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the secrets."""
    return {name: value for name, value in env.items() if name not in SECRET_ENV_VARS}


def scrub_argv(secrets: Iterable[str | None]) -> bool:
    """Overwrite each secret with '*' in this process's argv memory, which is what
    /proc/self/cmdline shows. Python keeps its own copy in sys.argv, so nothing
    reads that memory after start-up. True when /proc/self/cmdline no longer
    holds any of the secrets."""
    needles = [s.encode() for s in secrets if s]
    if not needles:
        return True
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): the command name in parentheses may hold spaces.
        start, end = int(fields[_ARG_START_FIELD - 3]), int(fields[_ARG_END_FIELD - 3])
        area = ctypes.string_at(start, end - start)
        for needle in needles:
            at = area.find(needle)
            while at >= 0:
                ctypes.memset(start + at, ord("*"), len(needle))
                at = area.find(needle, at + len(needle))
        shown = Path("/proc/self/cmdline").read_bytes()
    except (OSError, ValueError, IndexError) as exc:
        logger.warning("cannot hide secrets from the command line (%s); prefer API_KEY / HF_TOKEN", exc)
        return False
    if any(needle in shown for needle in needles):
        logger.warning("the command line still shows a secret; prefer API_KEY / HF_TOKEN")
        return False
    return True
