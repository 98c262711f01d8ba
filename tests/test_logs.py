"""LOG_LEVEL read as TEI reads it (tracing's EnvFilter), and TEI's JSON log fields."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import httpx
import pytest

from embedserve.proto import logs
from embedserve.proto.logs import OFF, TRACE, LogFilter, TeiJsonFormatter, configure_logging, parse_log_level
from tests.conftest import start_server

# ---------------------------------------------------------------- LOG_LEVEL directives


@pytest.mark.parametrize(("raw", "level"), [
    ("trace", TRACE), ("debug", logging.DEBUG), ("info", logging.INFO), ("warn", logging.WARNING),
    ("error", logging.ERROR), ("off", OFF), ("TRACE", TRACE), ("Warn", logging.WARNING), ("INFO", logging.INFO),
    ("5", TRACE), ("0", OFF), ("warning", logging.WARNING),
])
def test_a_bare_level_is_the_default(raw: str, level: int) -> None:
    assert parse_log_level(raw) == LogFilter(level, {}, ())


@pytest.mark.parametrize("raw", [None, "", "  ", ","])
def test_unset_or_empty_is_info(raw: str | None) -> None:
    assert parse_log_level(raw) == LogFilter(logging.INFO, {}, ())


def test_a_default_with_our_logger_names() -> None:
    assert parse_log_level("info,router=debug") == LogFilter(logging.INFO, {"embedserve.router": logging.DEBUG}, ())
    parsed = parse_log_level("warn, backends.onnx_backend=trace ,hypercorn.error=error")
    assert parsed.default == logging.WARNING and not parsed.problems
    assert parsed.loggers == {"embedserve.backends.onnx_backend": TRACE, "hypercorn.error": logging.ERROR}


def test_tei_crate_names_select_the_loggers_doing_their_work() -> None:
    parsed = parse_log_level("text_embeddings_router=debug,warn")
    assert parsed.default == logging.WARNING
    assert parsed.loggers == {"launcher": logging.DEBUG, "embedserve.router": logging.DEBUG}
    core = parse_log_level("text_embeddings_core=trace").loggers
    assert core["embedserve.tokenizer_pool"] == TRACE and core["embedserve.router.batch_queue"] == TRACE
    # A prefix covers every crate it starts, as EnvFilter matches targets.
    assert parse_log_level("text_embeddings_backend=debug").loggers["embedserve.backends"] == logging.DEBUG
    assert parse_log_level("text_embeddings_backend_ort=debug").loggers == {
        "embedserve.backends.onnx_backend": logging.DEBUG, "embedserve.backends.onnx_cache": logging.DEBUG}
    # A module path inside a crate stands for the crate.
    assert parse_log_level("text_embeddings_router::http::server=error").loggers["embedserve.router"] == logging.ERROR


def test_the_more_specific_target_wins_whatever_the_order() -> None:
    parsed = parse_log_level("text_embeddings_backend_ort=debug,text_embeddings_backend=error")
    assert parsed.loggers["embedserve.backends"] == logging.ERROR
    assert parsed.loggers["embedserve.backends.onnx_backend"] == logging.DEBUG


def test_targets_alone_turn_the_rest_off() -> None:
    # EnvFilter enables only what a directive names when no default level is given.
    parsed = parse_log_level("router=debug")
    assert parsed.default == OFF and parsed.loggers == {"embedserve.router": logging.DEBUG}
    # A bare target enables all its levels.
    assert parse_log_level("info,router").loggers == {"embedserve.router": TRACE}


def test_an_unknown_target_matches_nothing_and_is_no_problem() -> None:
    parsed = parse_log_level("info,some_other_crate=debug")
    assert parsed.default == logging.INFO and parsed.problems == ()


@pytest.mark.parametrize("bad", ["router=loud", "=debug", "router=", "a b=info", "router[span]=debug",
                                 "router{x=1}=debug", "router=debug=info", "9", "lots of noise"])
def test_a_malformed_directive_is_skipped_with_a_reason(bad: str) -> None:
    parsed = parse_log_level(f"warn,{bad},tokenizer_pool=debug")
    assert parsed.default == logging.WARNING
    assert parsed.loggers == {"embedserve.tokenizer_pool": logging.DEBUG}
    assert len(parsed.problems) == 1 and repr(bad) in parsed.problems[0], parsed.problems


def test_configure_logging_applies_the_directives(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOG_LEVEL", "warn,tests.logs.loud=debug,router=loud")
    saved = {name: logging.getLogger(name).level for name in ("", "tests.logs.loud", "embedserve.proto.logs")}
    try:
        configure_logging("launcher", False, report_problems=True)
        logging.getLogger("tests.logs.loud").debug("shown at debug")
        logging.getLogger("tests.logs.quiet").info("hidden at info")
        err = capsys.readouterr().err
        assert "shown at debug" in err and "hidden at info" not in err
        assert "LOG_LEVEL: skipped 'router=loud'" in err
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        logging.getLogger().handlers[:] = []


# ---------------------------------------------------------------- JSON lines


def _record(level: int, message: str, **extra: object) -> logging.LogRecord:
    record = logging.getLogger("router.app").makeRecord(
        "router.app", level, str(Path(__file__).resolve().parent.parent / "router" / "app.py"), 42, message, (),
        None, extra=extra or None)
    record.created = 1_700_000_000.123456
    return record


def test_json_lines_carry_tei_field_names() -> None:
    line = json.loads(TeiJsonFormatter("router").format(_record(logging.WARNING, "slow backend")))
    assert list(line)[:6] == ["timestamp", "level", "message", "target", "filename", "line_number"]
    assert line["timestamp"] == "2023-11-14T22:13:20.123456Z"  # RFC 3339, UTC
    assert line["level"] == "WARN" and line["message"] == "slow backend" and line["target"] == "router.app"
    assert line["filename"] == "router/app.py" and line["line_number"] == 42
    assert line["process"] == "router"  # ours, beside TEI's
    assert "span" not in line and "spans" not in line


@pytest.mark.parametrize(("level", "name"), [(TRACE, "TRACE"), (logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"),
                                             (logging.ERROR, "ERROR"), (logging.CRITICAL, "ERROR")])
def test_json_level_names_are_tracings(level: int, name: str) -> None:
    assert json.loads(TeiJsonFormatter("x").format(_record(level, "m")))["level"] == name


def test_json_lines_carry_what_the_span_hook_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    # proto/tracing installs the hook when spans are on (tests/router/test_tracing.py runs it for real).
    span = {"name": "embed", "inputs": 2}
    monkeypatch.setattr(logs, "span_fields", lambda: {"span": span, "spans": [span]})
    line = json.loads(TeiJsonFormatter("router").format(_record(logging.INFO, "m")))
    assert line["span"] == span and line["spans"] == [span]
    monkeypatch.setattr(logs, "span_fields", dict)  # no span open
    empty = json.loads(TeiJsonFormatter("router").format(_record(logging.INFO, "m")))
    assert "span" not in empty and "spans" not in empty


def test_json_filenames_of_libraries_are_relative_to_their_path_entry() -> None:
    import hypercorn.config

    record = _record(logging.INFO, "m")
    record.pathname = hypercorn.config.__file__
    assert json.loads(TeiJsonFormatter("x").format(record))["filename"] == "hypercorn/config.py"


# ---------------------------------------------------------------- real servers

BATCH_DEBUG_LINE = re.compile(r"DEBUG .*backends\.server: (bulk|interactive) batch of 1 sequences")


@pytest.mark.parametrize(("log_level", "backend_debug_shown"), [
    ("trace", True),
    ("info,router=debug", False),
    ("text_embeddings_backend=debug,INFO", True),
])
def test_a_server_starts_and_serves_under_tei_log_levels(
    log_level: str, backend_debug_shown: bool, tmp_path: Path
) -> None:
    with start_server("--tokenization-workers", "1", tmp_dir=tmp_path, env={"LOG_LEVEL": log_level}) as server:
        response = httpx.post(f"{server.url}/embed", json={"inputs": "logged"}, timeout=60)
        assert response.status_code == 200 and len(response.json()[0]) == 384
    # The backend process read LOG_LEVEL as the launcher did.
    assert bool(BATCH_DEBUG_LINE.search(server.log())) is backend_debug_shown, server.log()[-3000:]
    assert "Traceback" not in server.log()


def test_json_output_of_every_process_has_tei_fields(tmp_path: Path) -> None:
    with start_server("--tokenization-workers", "1", "--json-output", tmp_dir=tmp_path,
                      env={"LOG_LEVEL": "info,text_embeddings_backend=debug"}) as server:
        assert httpx.post(f"{server.url}/embed", json={"inputs": "json"}, timeout=60).status_code == 200
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert {line["process"] for line in lines} >= {"launcher", "router", "backend-0", "tokenizer-0"}
    for line in lines:
        assert {"timestamp", "level", "message", "target", "filename", "line_number"} <= set(line), line
        assert line["level"] in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["timestamp"])
    assert any(line["level"] == "DEBUG" and line["target"] == "embedserve.backends.server" for line in lines)
    # Files are named relative to the project, as TEI's are to its workspace.
    assert any(line["filename"] == "launcher.py" for line in lines)
