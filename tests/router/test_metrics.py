from __future__ import annotations

from embedserve.router.metrics import Counter, Metrics


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


def test_observing_n_equal_values_at_once_counts_as_n_observations() -> None:
    one_by_one, at_once = Metrics(max_input_length=256), Metrics(max_input_length=256)
    for value in (0.0004, 0.0004, 0.0004, 0.3):
        one_by_one.request_duration.observe(value)
    at_once.request_duration.observe(0.0004, 3)
    at_once.request_duration.observe(0.3)
    assert at_once.render() == one_by_one.render()
    assert at_once.request_duration.maximum == 0.3


def test_label_sets_are_one_series_whatever_the_keyword_order() -> None:
    counter = Counter("x", "help")
    counter.inc(err="validation", method="single")
    counter.inc(method="single", err="validation")
    counter.inc()
    assert counter.value(method="single", err="validation") == 2
    assert counter.value() == 1 and counter.value(err="validation") == 0
