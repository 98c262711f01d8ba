"""The printed table and the JSON record of one benchmark suite."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.baseline import BaselineResult
from bench.corpus import Corpus
from bench.load import LoadResult
from bench.scenarios import INT8_TARGETS, Scenario


@dataclass
class RunReport:
    scenario: Scenario
    baseline: BaselineResult | None  # sentence-transformers in-process, same engine
    server: LoadResult
    min_cosine: float | None  # server vectors versus baseline vectors, same texts

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.server.seconds <= 0:
            return None
        return self.server.texts_per_s / self.baseline.texts_per_s


@dataclass(frozen=True)
class Int8Figures:
    speedup: float  # int8 server texts/s over float32 server texts/s
    mean_cosine: float | None  # int8 vectors against float32's, text by text
    min_cosine: float | None


@dataclass
class SuiteReport:
    config: dict[str, Any]
    runs: list[RunReport]
    corpus: Corpus

    def run(self, name: str) -> RunReport | None:
        return next((r for r in self.runs if r.scenario.name == name), None)

    def int8_figures(self) -> Int8Figures | None:
        """Speed-up of int8 over float32 ONNX serving, and the cosines between their vectors."""
        int8, float32 = self.run("onnx-int8"), self.run("onnx")
        if int8 is None or float32 is None or float32.server.texts_per_s <= 0:
            return None
        cosines = _cosines(int8.server, float32.server)
        return Int8Figures(speedup=int8.server.texts_per_s / float32.server.texts_per_s,
                           mean_cosine=float(cosines.mean()) if cosines.size else None,
                           min_cosine=float(cosines.min()) if cosines.size else None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"config": self.config, "runs": {}}
        for run in self.runs:
            s = run.server
            entry: dict[str, Any] = {
                "server_args": list(run.scenario.server_args),
                "server": {"texts": s.texts, "seconds": s.seconds, "tokens": s.tokens,
                           "texts_per_s": s.texts_per_s, "tokens_per_s": s.tokens_per_s,
                           "latency_p50_ms": s.latency_ms(0.50), "latency_p99_ms": s.latency_ms(0.99),
                           "errors": len(s.failures)},
                "ratio_texts_per_s": run.ratio,
                "target_ratio": run.scenario.target_ratio,
                "min_cosine_vs_baseline": run.min_cosine,
            }
            if run.baseline is not None:
                b = run.baseline
                entry["baseline"] = {"backend": run.scenario.baseline_backend, "texts": b.texts, "seconds": b.seconds,
                                     "tokens": b.tokens, "texts_per_s": b.texts_per_s, "tokens_per_s": b.tokens_per_s}
            out["runs"][run.scenario.name] = entry
        figures = self.int8_figures()
        if figures is not None:
            out["int8"] = {"speedup_vs_float32": figures.speedup, "mean_cosine_vs_float32": figures.mean_cosine,
                           "min_cosine_vs_float32": figures.min_cosine}
        return out


def _cosines(a: LoadResult, b: LoadResult) -> np.ndarray:
    """Text by text, over the requests both runs answered."""
    common = sorted(set(a.embeddings) & set(b.embeddings))
    if not common:
        return np.empty(0)
    x = np.concatenate([a.embeddings[i] for i in common])
    y = np.concatenate([b.embeddings[i] for i in common])
    cos: np.ndarray = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return cos


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_suite(suite: SuiteReport) -> str:
    header = (f"{'':<22}{'texts':>7}{'seconds':>9}{'texts/s':>9}{'tokens/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'errors':>8}")
    lines = [header, "-" * len(header)]
    shown: set[str] = set()
    for run in suite.runs:
        b = run.baseline
        if b is not None and run.scenario.baseline_backend not in shown:
            shown.add(run.scenario.baseline_backend or "")
            name = f"ST in-process {run.scenario.baseline_backend}"
            lines.append(f"{name:<22}{b.texts:>7}{b.seconds:>9.2f}{b.texts_per_s:>9.1f}{b.tokens_per_s:>10.0f}"
                         f"{'-':>9}{'-':>9}{'-':>8}")
    for run in suite.runs:
        s = run.server
        name = f"server {run.scenario.name}"
        lines.append(f"{name:<22}{s.texts:>7}{s.seconds:>9.2f}{s.texts_per_s:>9.1f}{s.tokens_per_s:>10.0f}"
                     f"{_fmt(s.latency_ms(0.50)):>9}{_fmt(s.latency_ms(0.99)):>9}{len(s.failures):>8}")
    lines.append("")
    for run in suite.runs:
        if run.ratio is None:
            continue
        target = run.scenario.target_ratio
        verdict = "" if target is None else f"  (target >= {target:.2f}: {'met' if run.ratio >= target else 'MISSED'})"
        lines.append(f"ratio server {run.scenario.name} / ST {run.scenario.baseline_backend} (texts/s): "
                     f"{run.ratio:.2f}{verdict}")
        if run.min_cosine is not None:
            lines.append(f"  min cosine server {run.scenario.name} vs ST {run.scenario.baseline_backend}: "
                         f"{run.min_cosine:.5f}")
        if run.baseline is not None and run.baseline.tokens != run.server.tokens:
            # A mismatch means the server truncates or adds special tokens differently.
            lines.append(f"  note: token counts differ (baseline {run.baseline.tokens}, server {run.server.tokens})")
    figures = suite.int8_figures()
    if figures is not None:
        bar = INT8_TARGETS
        met = (figures.speedup >= bar.speedup and (figures.mean_cosine or 0.0) >= bar.mean_cosine
               and (figures.min_cosine or 0.0) >= bar.min_cosine)
        lines.append(f"int8 vs float32 (onnx server): speed-up {figures.speedup:.2f}x, "
                     f"mean cosine {_fmt(figures.mean_cosine, 5)}, min cosine {_fmt(figures.min_cosine, 5)}  "
                     f"(targets >= {bar.speedup:.2f}x, {bar.mean_cosine}, {bar.min_cosine}: "
                     f"{'met' if met else 'MISSED'})")
    return "\n".join(lines)


def write_json(suite: SuiteReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite.to_json(), indent=2) + "\n", encoding="utf-8")
