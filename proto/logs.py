"""Logging of every process, set up the same way: LOG_LEVEL as TEI reads it, and
TEI's JSON log fields under --json-output.

LOG_LEVEL follows tracing's EnvFilter (TEI router/src/logging.rs): a comma-separated
list of directives, each `level` (the default for everything) or `target=level`
(or a bare `target`, which enables all its levels). Levels are trace, debug,
info, warn, error, off (any case, or 0-5 as EnvFilter counts them). TEI's crate
names as targets select the loggers that do that crate's work here
(`TEI_TARGETS`); any other target is taken as a Python logger name (`router`,
`backends.onnx_backend`, `hypercorn.error`); one nobody logs under matches
nothing, as an unknown target does in EnvFilter. A directive that does not parse
is skipped with a warning, never a failed start. Unset or empty: `info`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

TRACE = 5  # tracing's level below debug; Python has none
OFF = logging.CRITICAL + 1
logging.addLevelName(TRACE, "TRACE")

LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "error": logging.ERROR, "off": OFF,
          # Python's spellings, which LOG_LEVEL took before it read EnvFilter's.
          "warning": logging.WARNING, "critical": logging.CRITICAL}
# EnvFilter's numeric levels: 0 is off, 5 trace.
NUMERIC_LEVELS = (OFF, logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG, TRACE)

# TEI's crates, and the loggers of this project that do their work.
TEI_TARGETS: dict[str, tuple[str, ...]] = {
    "text_embeddings_router": ("launcher", "router"),
    "text_embeddings_core": ("tokenizer_pool", "router.batch_queue", "router.dispatcher", "router.queue_owner",
                             "router.infer"),
    "text_embeddings_backend": ("backends",),
    "text_embeddings_backend_core": ("backends",),
    "text_embeddings_backend_candle": ("backends.torch_backend", "backends.gte", "backends.varlen"),
    "text_embeddings_backend_ort": ("backends.onnx_backend", "backends.onnx_cache"),
    "text_embeddings_backend_python": ("backends.remote_code",),
}
# The installed package and the folders under it (pyproject.toml).
PACKAGE = "embedserve"
PACKAGE_PARTS = ("router", "backends", "tokenizer_pool", "proto")
# At debug, hpack logs every decoded header, Authorization included: it stays at
# info unless a directive names it.
QUIET_UNLESS_NAMED = ("hpack",)

# tracing's JSON level names.
_LEVEL_NAMES = {TRACE: "TRACE", logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
                logging.ERROR: "ERROR", logging.CRITICAL: "ERROR"}


@dataclass(frozen=True)
class LogFilter:
    """LOG_LEVEL, parsed: the default level, per-logger levels, and what was skipped."""

    default: int = logging.INFO
    loggers: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def parse_log_level(raw: str | None) -> LogFilter:
    if raw is None or not raw.strip():
        return LogFilter()
    default: int | None = None
    targeted: list[tuple[str, int]] = []
    problems: list[str] = []
    for directive in (part.strip() for part in raw.split(",")):
        if not directive:
            continue
        target, sep, level_text = directive.partition("=")
        target, level_text = target.strip(), level_text.strip()
        if "[" in target or "{" in target:
            problems.append(f"{directive!r}: span filters are not supported")
            continue
        if not sep:
            level = _level(target)
            if level is not None:
                default = level
            elif _is_target(target):
                targeted.append((target, TRACE))  # a bare target enables all its levels
            else:
                problems.append(f"{directive!r} is neither a level nor a target")
            continue
        level = _level(level_text)
        if not target or not _is_target(target) or level is None:
            problems.append(f"{directive!r} is not target=level with a level of trace, debug, info, warn, error, off")
            continue
        targeted.append((target, level))
    loggers: dict[str, int] = {}
    # The more specific target wins, as in EnvFilter: apply the longer ones last.
    for target, level in sorted(targeted, key=lambda item: len(item[0])):
        for name in _loggers_of(target):
            loggers[name] = level
    # EnvFilter enables nothing a directive does not cover: with only targets, the rest is off.
    if default is None:
        default = OFF if targeted else logging.INFO
    return LogFilter(default, loggers, tuple(problems))


def _level(text: str) -> int | None:
    if text.isdigit():
        number = int(text)
        return NUMERIC_LEVELS[number] if number < len(NUMERIC_LEVELS) else None
    return LEVELS.get(text.lower())


def _is_target(text: str) -> bool:
    # Rust module paths (a::b) and Python logger names (a.b).
    return bool(text) and all(part.isidentifier() for part in text.replace("::", ".").split("."))


def _loggers_of(target: str) -> tuple[str, ...]:
    # EnvFilter matches a target by prefix: text_embeddings_backend covers all
    # backend crates; a module path inside a crate counts as the whole crate.
    crate = target.split("::", 1)[0]
    if "::" in target and crate in TEI_TARGETS:
        return tuple(map(_installed_name, TEI_TARGETS[crate]))
    tei = [name for name, ours in TEI_TARGETS.items() if name.startswith(crate)]
    if tei:
        return tuple(dict.fromkeys(_installed_name(logger) for name in tei for logger in TEI_TARGETS[name]))
    return (_installed_name(target.replace("::", ".")),)


def _installed_name(logger: str) -> str:
    """Module loggers are named after the installed package (`embedserve.router.app`);
    targets may leave the package out, as the folders do (`router=debug`)."""
    return f"{PACKAGE}.{logger}" if logger.split(".", 1)[0] in PACKAGE_PARTS else logger


# ---------------------------------------------------------------- JSON lines


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


# Set by proto/tracing when spans are on: the current span's TEI log fields
# (`span`, `spans`; none while no span is open); None leaves them out
# (--disable-spans, no tracing).
span_fields: Callable[[], dict[str, object]] | None = None


class TeiJsonFormatter(logging.Formatter):
    """One JSON object per line with the fields of TEI's (tracing-subscriber's
    flattened JSON): timestamp, level, message, target, filename, line_number,
    and span / spans when the record carries them (the `span` and `spans`
    attributes, set by the tracing code; never empty ones). `process` names the
    process the line comes from, and `exception` holds a traceback: ours."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role
        self._root = _project_root()
        self._filenames: dict[str, str] = {}

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname),
            "message": record.getMessage(),
            "target": record.name,
            "filename": self._filename(record.pathname),
            "line_number": record.lineno,
        }
        if span_fields is not None:
            payload.update(span_fields())
        payload["process"] = self._role
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str)

    def _filename(self, pathname: str) -> str:
        """The path relative to the project (router/app.py), or to the sys.path
        entry it came from (hypercorn/...), as TEI's are relative to its crate."""
        known = self._filenames.get(pathname)
        if known is not None:
            return known
        path = Path(pathname)
        name = path.name
        # The deepest base wins: a virtualenv may sit inside the project.
        bases = sorted({self._root, *(Path(entry) for entry in sys.path if entry)}, key=lambda b: len(b.parts),
                       reverse=True)
        for base in bases:
            try:
                name = path.relative_to(base).as_posix()
                break
            except ValueError:
                continue
        self._filenames[pathname] = name
        return name


def configure_logging(role: str, json_output: bool, *, report_problems: bool = False) -> LogFilter:
    """Set up the root logger of a process from LOG_LEVEL; called before heavy
    imports. `report_problems`: warn about skipped directives (the launcher does,
    once for the server; its children read the same LOG_LEVEL quietly)."""
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(TeiJsonFormatter(role))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-5s [{role}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    log_filter = parse_log_level(os.environ.get("LOG_LEVEL"))
    root.setLevel(log_filter.default)
    for name in QUIET_UNLESS_NAMED:
        if name not in log_filter.loggers and log_filter.default < logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    for name, level in log_filter.loggers.items():
        logging.getLogger(name).setLevel(level)
    if report_problems and log_filter.problems:
        # Shown whatever LOG_LEVEL says, as EnvFilter prints its own complaints.
        reporter = logging.getLogger(__name__)
        reporter.setLevel(min(reporter.getEffectiveLevel(), logging.WARNING))
        for problem in log_filter.problems:
            reporter.warning("LOG_LEVEL: skipped %s", problem)
    return log_filter
