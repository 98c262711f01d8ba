"""The printed table and the JSON record of one benchmark run."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.baseline import BaselineResult
from bench.load import LoadResult

TARGET_RATIO = 0.80


@dataclass
class RunReport:
    config: dict[str, Any]
    baseline: BaselineResult | None
    server: LoadResult
    min_cosine: float | None  # server vectors versus baseline vectors, same texts

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.server.seconds <= 0:
            return None
        return self.server.texts_per_s / self.baseline.texts_per_s

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"config": self.config}
        if self.baseline is not None:
            b = self.baseline
            out["baseline"] = {"texts": b.texts, "seconds": b.seconds, "tokens": b.tokens,
                               "texts_per_s": b.texts_per_s, "tokens_per_s": b.tokens_per_s}
        s = self.server
        out["server"] = {"texts": s.texts, "seconds": s.seconds, "tokens": s.tokens,
                         "texts_per_s": s.texts_per_s, "tokens_per_s": s.tokens_per_s,
                         "latency_p50_ms": s.latency_ms(0.50), "latency_p99_ms": s.latency_ms(0.99),
                         "requests": len(s.latencies_s) + sum(f.status is None for f in s.failures),
                         "errors": len(s.failures)}
        out["ratio_texts_per_s"] = self.ratio
        out["target_ratio"] = TARGET_RATIO
        out["min_cosine_vs_baseline"] = self.min_cosine
        return out


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_table(report: RunReport) -> str:
    header = f"{'':<9}{'texts':>7}{'seconds':>9}{'texts/s':>9}{'tokens/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    lines = [header, "-" * len(header)]
    if report.baseline is not None:
        b = report.baseline
        lines.append(f"{'baseline':<9}{b.texts:>7}{b.seconds:>9.2f}{b.texts_per_s:>9.1f}{b.tokens_per_s:>10.0f}"
                     f"{'-':>9}{'-':>9}{'-':>8}")
    s = report.server
    lines.append(f"{'server':<9}{s.texts:>7}{s.seconds:>9.2f}{s.texts_per_s:>9.1f}{s.tokens_per_s:>10.0f}"
                 f"{_fmt(s.latency_ms(0.50)):>9}{_fmt(s.latency_ms(0.99)):>9}{len(s.failures):>8}")
    ratio = report.ratio
    lines.append(f"ratio server/baseline (texts/s): {_fmt(ratio, 2) if ratio is not None else 'n/a (no baseline)'}")
    lines.append(f"target >= {TARGET_RATIO:.2f}")
    if report.baseline is not None and report.baseline.tokens != report.server.tokens:
        # A mismatch means the server truncates or adds special tokens differently.
        lines.append(f"note: token counts differ (baseline {report.baseline.tokens}, server {report.server.tokens})")
    if report.min_cosine is not None:
        lines.append(f"min cosine server vs baseline: {report.min_cosine:.5f}")
    return "\n".join(lines)


def write_json(report: RunReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
