"""Distributor validation through the real daemon: Mimir's messages, ids and flags, partial acceptance,
discard counters, exemplars, metadata, the skip-validation opt-outs and the message size limit."""

from __future__ import annotations

import pytest

from distributor_support import metric_value, module_daemon, now_ms, push, stored_series, write_body
from mimird.distributor import validation as v

MAX_MSG = 4000

RUNTIME = """
overrides:
  small:
    max_label_names_per_series: 3
    max_label_names_per_info_series: 4
    max_label_name_length: 10
    max_label_value_length: 20
    max_metadata_length: 12
    past_grace_period: 1h
    creation_grace_period: 1m
  exemplars:
    max_global_exemplars_per_user: 100
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from module_daemon(tmp_path_factory, "validation",
                             [f"-distributor.max-recv-msg-size={MAX_MSG}",
                              "-api.skip-label-name-validation-header-enabled=true"], RUNTIME)


def one(pairs, ts=None, value=1.0):
    return (tuple(pairs), [(ts if ts is not None else now_ms(), value)])


def expect_400(response, message):
    assert response.status_code == 400, response.text
    assert response.text == message + "\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


PER_TENANT = ". To adjust the related per-tenant limit, configure -{}, or contact your service administrator."


def test_missing_metric_name_drops_only_that_series(d):
    good = one([("__name__", "good_total"), ("job", "a")])
    bad = one([("job", "nameless")])
    before = metric_value(d, "cortex_discarded_samples_total", reason="missing_metric_name", user="t1")
    expect_400(push(d, "t1", [bad, good]), "received series has no metric name (err-mimir-missing-metric-name)")
    assert stored_series(d, "t1") == {(("__name__", "good_total"), ("job", "a"))}
    assert metric_value(d, "cortex_discarded_samples_total", reason="missing_metric_name", user="t1") == before + 1
    assert metric_value(d, "cortex_distributor_received_samples_total", user="t1") == 1


def test_first_error_wins_and_all_good_series_are_kept(d):
    series = [one([("__name__", "ok_a")]), one([("__name__", "1bad")]), one([("job", "x")]),
              one([("__name__", "ok_b")])]
    expect_400(push(d, "t2", series),
               "received a series with invalid metric name: '1bad' (err-mimir-metric-name-invalid)")
    assert {labels[0][1] for labels in stored_series(d, "t2")} == {"ok_a", "ok_b"}


def test_invalid_metric_name_non_ascii(d):
    expect_400(push(d, "t3", [one([("__name__", "héllo.wörld")])]),
               "received a series with invalid metric name: 'hllo.wrld (non-ascii characters removed)' "
               "(err-mimir-metric-name-invalid)")


def test_nothing_valid_left_is_the_remembered_error(d):
    expect_400(push(d, "t4", [one([("__name__", "a"), ("bad-name", "x")])]),
               "received a series with an invalid label: 'bad-name' series: 'a{bad-name=\"x\"}' (err-mimir-label-invalid)")


def test_too_many_labels(d):
    labels = [("__name__", "m"), ("a", "1"), ("b", "2"), ("c", "3")]
    expect_400(push(d, "small", [one(labels)]),
               "received a series whose number of labels exceeds the limit (actual: 4, limit: 3) series: "
               "'m{a=\"1\", b=\"2\", c=\"3\"}' (err-mimir-max-label-names-per-series)"
               + PER_TENANT.format("validation.max-label-names-per-series"))
    # info series use their own limit: 4 labels pass, 5 fail
    assert push(d, "small", [one([("__name__", "build_info"), ("a", "1"), ("b", "2"), ("c", "3")])]).status_code == 200
    expect_400(push(d, "small", [one([("__name__", "build_info"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")])]),
               "received an info series whose number of labels exceeds the limit (actual: 5, limit: 4) series: "
               "'build_info{a=\"1\", b=\"2\", c=\"3\", d=\"4\"}' (err-mimir-max-label-names-per-info-series)"
               + PER_TENANT.format("validation.max-label-names-per-info-series"))
    assert metric_value(d, "cortex_discarded_samples_total", reason="max_label_names_per_series", user="small") >= 1


def test_default_label_count_limit_and_ellipsis(d):
    labels = [("__name__", "wide")] + [(f"label_{i:02d}", "v" * 5) for i in range(30)]
    response = push(d, "t5", [one(labels)])
    assert response.status_code == 400
    assert response.text.startswith("received a series whose number of labels exceeds the limit "
                                     "(actual: 31, limit: 30) series: 'wide{label_00=")
    assert "\u2026' (err-mimir-max-label-names-per-series)" in response.text


def test_label_name_and_value_length(d):
    expect_400(push(d, "small", [one([("__name__", "m"), ("a_very_long_name", "x")])]),
               "received a series whose label name length exceeds the limit, label: 'a_very_long_name' series: "
               "'m{a_very_long_name=\"x\"}' (err-mimir-label-name-too-long)"
               + PER_TENANT.format("validation.max-length-label-name"))
    value = "v" * 21
    expect_400(push(d, "small", [one([("__name__", "m"), ("a", value)])]),
               f"received a series whose label value length exceeds the limit, label: 'a', value: '{value}' "
               f"(truncated) series: 'm{{a=\"{value}\"}}' (err-mimir-label-value-too-long)"
               + PER_TENANT.format("validation.max-length-label-value"))
    # the metric name is a label value too
    long_name = "metric_" + "x" * 20
    response = push(d, "small", [one([("__name__", long_name)])])
    assert response.status_code == 400 and "label: '__name__'" in response.text


def test_duplicate_label_names(d):
    expect_400(push(d, "t6", [one([("__name__", "m"), ("a", "1"), ("a", "2")])]),
               "received a series with duplicate label name, label: 'a' series: 'm{a=\"1\", a=\"2\"}' "
               "(err-mimir-duplicate-label-names)")


def test_sample_too_far_in_future_rejects_the_whole_series(d):
    now = now_ms()
    future = now + 3_600_000
    series = [(( ("__name__", "fut"),), [(now, 1.0), (future, 2.0)]), one([("__name__", "present")])]
    expect_400(push(d, "t7", series),
               f"received a sample whose timestamp is too far in the future, timestamp: {future} series: 'fut' "
               "(err-mimir-too-far-in-future)" + PER_TENANT.format("validation.create-grace-period"))
    assert stored_series(d, "t7") == {(("__name__", "present"),)}
    assert metric_value(d, "cortex_discarded_samples_total", reason="too_far_in_future", user="t7") == 1


def test_creation_and_past_grace_per_tenant(d):
    now = now_ms()
    # 'small' has creation_grace_period 1m: 5 minutes ahead is too far for it
    response = push(d, "small", [one([("__name__", "m")], ts=now + 300_000)])
    assert response.status_code == 400 and "(err-mimir-too-far-in-future)" in response.text
    past = now - 2 * 3_600_000
    expect_400(push(d, "small", [one([("__name__", "old")], ts=past)]),
               f"received a sample whose timestamp is too far in the past, timestamp: {past} series: 'old' "
               "(err-mimir-too-far-in-past)" + PER_TENANT.format("validation.past-grace-period"))
    # the default tenant has no past grace period: an old sample reaches the ingester
    assert push(d, "t8", [one([("__name__", "old")], ts=now - 30 * 60_000)]).status_code == 200


def test_duplicate_timestamps_in_a_series_keep_the_first(d):
    now = now_ms()
    series = [((("__name__", "dup"),), [(now, 1.0), (now, 2.0), (now + 1, 3.0)])]
    assert push(d, "t9", series).status_code == 200
    assert metric_value(d, "cortex_discarded_samples_total", reason="sample_duplicate_timestamp", user="t9") == 1
    assert metric_value(d, "cortex_distributor_received_samples_total", user="t9") == 2


def test_ingester_rejection_wins_and_is_counted(d):
    now = now_ms()
    assert push(d, "t10", [one([("__name__", "ooo")], ts=now)]).status_code == 200
    response = push(d, "t10", [one([("__name__", "ooo")], ts=now - 1000), one([("job", "x")])])
    assert response.status_code == 400
    assert response.text.startswith("failed pushing to ingester ")
    assert "user=t10: the sample has been rejected because another sample with a more recent timestamp" in response.text
    assert metric_value(d, "cortex_discarded_samples_total", reason="sample-out-of-order", user="t10") == 1


def test_native_histogram_schema_and_time(d):
    now = now_ms()
    series = [((("__name__", "hist"),), []), ((("__name__", "floats"),), [(now, 1.0)])]
    expect_400(push(d, "t16", series, histograms={0: [(3, now), (9, now + 1)]}),
               "received a native histogram sample with an invalid schema: 9 (err-mimir-invalid-native-histogram-schema)")
    assert stored_series(d, "t16") == {(("__name__", "floats"),)}
    assert metric_value(d, "cortex_discarded_samples_total", reason="invalid_native_histogram_schema",
                        user="t16") == 1
    future = now + 3_600_000
    response = push(d, "t16", series[:1], histograms={0: [(-53, future)]})
    assert response.status_code == 400
    assert response.text.startswith(f"received a sample whose timestamp is too far in the future, timestamp: {future}")
    assert push(d, "t16", series[:1], histograms={0: [(-4, now), (8, now + 1), (-53, now + 2)]}).status_code == 200


def test_metadata_validation(d):
    now = now_ms()
    expect_400(push(d, "t11", [one([("__name__", "m")], ts=now)], metadata=[(1, "", "help", "")]),
               "received a metric metadata with no metric name (err-mimir-metadata-missing-metric-name)")
    expect_400(push(d, "small", [], metadata=[(1, "a_too_long_name", "help", "")]),
               "received a metric metadata whose metric name length exceeds the limit, metric name: "
               "'a_too_long_name' (err-mimir-metric-name-too-long)" + PER_TENANT.format("validation.max-metadata-length"))
    expect_400(push(d, "small", [], metadata=[(1, "short", "help", "seconds_longer")]),
               "received a metric metadata whose unit name length exceeds the limit, unit: 'seconds_longer' metric "
               "name: 'short' (err-mimir-unit-too-long)" + PER_TENANT.format("validation.max-metadata-length"))
    # help text is cut, not refused
    assert push(d, "small", [], metadata=[(1, "short", "a help text longer than twelve", "")]).status_code == 200
    assert metric_value(d, "cortex_discarded_metadata_total", reason="missing_metric_name", user="t11") == 1


def test_exemplars_are_dropped_silently(d):
    now = now_ms()
    series = [one([("__name__", "ex_total")], ts=now)]
    exemplars = {0: [((("trace_id", "abc"),), 1.0, 0),          # no timestamp
                     ((), 1.0, now),                            # no labels
                     ((("trace_id", "x" * 130),), 1.0, now),    # labels too long
                     ((("trace_id", "ok"),), 1.0, now - 3_600_000),  # older than the request's samples - 5m
                     ((("trace_id", "ok"),), 1.0, now)]}
    assert push(d, "exemplars", series, exemplars=exemplars).status_code == 200
    for reason in ("exemplar_timestamp_invalid", "exemplar_labels_missing", "exemplar_labels_too_long",
                   "exemplar_too_old"):
        assert metric_value(d, "cortex_discarded_exemplars_total", reason=reason, user="exemplars") == 1, reason
    assert metric_value(d, "cortex_distributor_received_exemplars_total", user="exemplars") == 1


def test_skip_label_name_validation_needs_header_and_body_flag(d):
    series = [one([("__name__", "m"), ("bad-name", "x")])]
    header = {"X-Mimir-SkipLabelNameValidation": "true"}
    assert push(d, "t12", series, headers=header).status_code == 400  # header without the body field
    assert push(d, "t12", series, skip_label_validation=True).status_code == 400  # body field without header
    assert push(d, "t12", series, headers=header, skip_label_validation=True).status_code == 200
    # the opt-out does not cover the metric name
    response = push(d, "t12", [one([("__name__", "1m")])], headers=header, skip_label_validation=True)
    assert response.status_code == 400


def test_skip_label_count_validation_is_off_without_its_flag(d):
    labels = [("__name__", "m")] + [(f"l{i}", "v") for i in range(31)]
    response = push(d, "t13", [one(labels)], headers={"X-Mimir-SkipLabelCountValidation": "true"},
                    skip_label_count_validation=True)
    assert response.status_code == 400 and "(err-mimir-max-label-names-per-series)" in response.text


def test_message_size_limit_is_mimirs_400(d):
    import os

    body = write_body([one([("__name__", "big"), ("blob", os.urandom(3000).hex())])])
    assert MAX_MSG < len(body) <= 2 * MAX_MSG
    response = d.post("/api/v1/push", content=body, headers={"X-Scope-OrgID": "t14"})
    expect_400(response, f"the incoming push request has been rejected because its message size of {len(body)} "
               f"bytes is larger than the allowed limit of {MAX_MSG} bytes "
               "(err-mimir-distributor-max-write-message-size). To adjust the related limit, configure "
               "-distributor.max-recv-msg-size, or contact your service administrator.")


def test_empty_request_is_200(d):
    assert push(d, "t15", []).status_code == 200


def test_validation_functions_directly():
    limits = {"max_label_names_per_series": 30, "max_label_names_per_info_series": 80, "max_label_name_length": 1024,
              "max_label_value_length": 2048}
    assert v.validate_labels((("__name__", "up"), ("job", "a")), limits) is None
    reason, message = v.validate_labels((("__name__", "up"), ("job", "a\udcff")), limits)
    assert reason == v.LABEL_VALUE_INVALID
    assert message == "received a series with invalid value in label 'job': 'a\ufffd' metric: 'up' " \
                      "(err-mimir-label-value-invalid)"
    assert v.validate_labels((("__name__", "a:b"), ("_x", "1")), limits) is None
    assert v.exemplar_discard_reason((("", "v"),), 5, 0, 10) == v.EXEMPLAR_LABELS_BLANK
    assert v.exemplar_discard_reason((("a", "v"),), 11, 0, 10) == v.EXEMPLAR_TOO_FAR_IN_FUTURE
    entry, problem = v.clean_metadata((1, "m", "héllo", ""), {"enforce_metadata_metric_name": True,
                                                               "max_metadata_length": 2})
    assert problem is None and entry == (1, "m", "h", "")
