"""The OpenTelemetry Collector's OTLP-to-Prometheus name translation, in Python.

A port, for tests, of the rules the Collector's Prometheus exporters apply
with their defaults (metric suffixes added, names escaped to Prometheus's
legacy character set, no namespace): ``normalizeName``,
``buildUnitSuffixes``, ``addUnitTokens`` and the label namer of
``github.com/prometheus/otlptranslator`` (``metric_namer.go``,
``unit_namer.go``, ``label_namer.go``), which took them over from
opentelemetry-collector-contrib's ``pkg/translator/prometheus``
(``normalize_name.go``, ``normalize_label.go``). Read from the copy vendored
by grafana/grafana at commit d16ed8c; no Collector binary runs here, so
``test_otlp_metrics_names.py`` checks this port against the examples the
upstream documents and the cases of contrib's own ``normalize_name_test.go``.

Assumed: the Collector normalizes names, its default for years (contrib's
``pkg.translator.prometheus.NormalizeName`` feature gate, then the
exporters' ``add_metric_suffixes: true``); with it off, or with a UTF-8
translation strategy, names keep their dots and get no unit or ``_total``.
Contrib's older translator also treated ``:`` as invalid; no hookkit name
has one.

Not ported: the UTF-8 strategies (names sent untranslated to a Prometheus 3
that allows them), the deprecated ``UnderscoreLabelSanitization`` and
``PreserveMultipleUnderscores`` options, and the ``otel_scope_*`` labels
some exporters add.
"""

from __future__ import annotations

import re

MONOTONIC_SUM = "monotonic_sum"
NON_MONOTONIC_SUM = "non_monotonic_sum"
GAUGE = "gauge"
HISTOGRAM = "histogram"

# unitMap: OTLP (UCUM) units to Prometheus's words.
UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
# perUnitMap: the unit after "/".
PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}

_INVALID = re.compile(r"[^a-zA-Z0-9:]")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """buildUnitSuffixes: the main and the per unit's words ("" for none)."""
    tokens = unit.split("/", 1)
    main = per = ""
    main_otel = tokens[0].strip()
    if main_otel and not any(c in main_otel for c in "{}"):
        main = UNITS.get(main_otel, main_otel)
    if len(tokens) > 1 and tokens[1]:
        per_otel = tokens[1].strip()
        if per_otel and not any(c in per_otel for c in "{}"):
            per = PER_UNITS.get(per_otel, per_otel)
        if per:
            per = "per_" + per
    return main, per


def _clean_unit(unit: str) -> str:
    """cleanUpUnit: invalid characters to "_", runs collapsed, no leading "_"."""
    return re.sub(r"__+", "_", _INVALID.sub("_", unit)).removeprefix("_")


def metric_name(name: str, unit: str, kind: str) -> str:
    """normalizeName: the Prometheus name of an OTLP metric (a histogram's
    base name; its series add _bucket, _sum and _count)."""
    tokens = [token for token in _INVALID.split(name) if token]
    main, per = _unit_suffixes(unit)
    main, per = _clean_unit(main), _clean_unit(per)
    # addUnitTokens
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.removesuffix("_")
        if per in tokens:
            per = ""
    if per:
        main = main.removesuffix("_")
    if main:
        tokens.append(main)
    if per:
        tokens.append(per)
    if kind == MONOTONIC_SUM:
        tokens = [token for token in tokens if token != "total"] + ["total"]
    if unit == "1" and kind == GAUGE:
        tokens = [token for token in tokens if token != "ratio"] + ["ratio"]
    result = "_".join(tokens)
    if result and result[0].isdigit():
        result = "_" + result
    return result


def label_name(attribute: str) -> str:
    """LabelNamer.Build with sanitizeLabelName (legacy characters): every
    character outside [a-zA-Z0-9] to "_", runs collapsed, a reserved
    ``__name__`` kept in its underscores, "key_" before a leading digit."""
    reserved = len(attribute) >= 4 and attribute.startswith("__") and attribute.endswith("__")
    inner = attribute[2:-2] if reserved else attribute
    name = re.sub(r"[^a-zA-Z0-9]+", "_", inner)
    if reserved:
        name = "__" + name + "__"
    if name[0].isdigit():
        name = "key_" + name
    return name
