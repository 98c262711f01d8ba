from __future__ import annotations

from router.metrics import Metrics


def test_renders_tei_names_without_total_suffix() -> None:
    metrics = Metrics(max_input_length=256)
    metrics.request_count.inc(method="single")
    metrics.request_failure.inc(err="overloaded")
    metrics.request_duration.observe(0.002)
    metrics.request_input_length.observe(100)
    text = metrics.render()
    assert 'te_request_count{method="single"} 1' in text
    assert 'te_request_failure{err="overloaded"} 1' in text
    assert "# TYPE te_request_duration histogram" in text
    assert 'te_request_duration_bucket{le="+Inf"} 1' in text
    assert 'te_request_input_length_bucket{le="256"} 1' in text
    assert 'te_request_input_length_bucket{le="512"}' not in text
    assert "_total" not in text
