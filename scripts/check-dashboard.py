#!/usr/bin/env python3
"""Checks deploy/grafana/skygate-dashboard.json against gateway/src/metrics.rs.

Every PromQL expression of the dashboard (panel targets and template
variables) must parse, and may use only the `skygate_*` metrics that
metrics.rs registers (a histogram also as _bucket, _sum, _count) and only
their labels (`le` on a histogram's _bucket), in selectors and in by,
without, on, ignoring and group_left/right. Every panel queries the
`${DS_PROMETHEUS}` data source variable, and every `$variable` is defined.

    scripts/check-dashboard.py [METRICS_RS] [DASHBOARD_JSON]

Needs the `promql-parser` package (scripts/check-deploy.sh installs it).
Exit 0 when all is well, 1 with one line per problem otherwise.
"""

import json
import re
import sys
from pathlib import Path

try:
    import promql_parser
except ImportError:
    sys.exit("check-dashboard: the `promql-parser` package is missing (scripts/check-deploy.sh installs it in its venv)")

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metrics_from_rust(text):
    """{name: (kind, labels)} for each metric built in metrics.rs's build()."""
    body = text.split("fn build()", 1)[1].split("\nstatic METRICS", 1)[0]
    # The per-backend gauge helper: `let gauge = |name, help| IntGaugeVec::new(Opts::new(name, help), &["backend"]);`
    helper = re.search(r"let gauge = \|[^|]*\|\s*IntGaugeVec::new\([^;]*?&\[([^\]]*)\]\s*\)\s*;", body, re.S)
    helper_labels = re.findall(r'"([^"]+)"', helper.group(1)) if helper else None
    out = {}
    for stmt in re.split(r"\n\s*let ", body):
        m = re.search(r'"(skygate_[a-z0-9_]+)"', stmt)
        if not m:
            continue
        name = m.group(1)
        head = stmt[: m.start()]
        helper_call = re.search(r"=\s*gauge\(", head)
        ctor = re.findall(r"\b(\w+)::new\(", head)
        ctor = ctor[0] if ctor else ""
        if "HistogramOpts" in head:
            kind = "histogram"
        elif helper_call or "Gauge" in ctor:
            kind = "gauge"
        else:
            kind = "counter"
        if helper_call:
            if helper_labels is None:
                raise SystemExit("check-dashboard: cannot read the labels of metrics.rs's `gauge` helper")
            labels = helper_labels
        elif ctor.endswith("Vec"):
            lm = re.search(r"&\[([^\]]*)\]", stmt[m.end():])
            if not lm:
                raise SystemExit(f"check-dashboard: cannot read the labels of {name} in metrics.rs")
            labels = re.findall(r'"([^"]+)"', lm.group(1))
        elif ctor in ("IntGauge", "IntCounter", "Gauge", "Counter"):
            labels = []
        else:
            raise SystemExit(f"check-dashboard: cannot tell what {name} is in metrics.rs (constructor `{ctor}`)")
        if name in out:
            raise SystemExit(f"check-dashboard: {name} is built twice in metrics.rs")
        out[name] = (kind, set(labels))
    if not out:
        raise SystemExit("check-dashboard: found no skygate_* metric in metrics.rs")
    return out


def resolve(name, metrics):
    """(base metric, labels allowed) for a series name, or None."""
    if name in metrics:
        kind, labels = metrics[name]
        return name, set(labels)
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and base in metrics and metrics[base][0] == "histogram":
            labels = set(metrics[base][1])
            if suffix == "_bucket":
                labels.add("le")
            return base, labels
    return None


def substitute(expr, defined, where, errors):
    def var(m):
        name = m.group(1) or m.group(2)
        if name in GRAFANA_VARS:
            return GRAFANA_VARS[name]
        if name not in defined:
            errors.append(f"{where}: ${name} is not a variable of the dashboard")
        return ".*"
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", var, expr)


def check_expr(expr, metrics, defined, where, errors, used):
    promql = substitute(expr, defined, where, errors)
    try:
        ast = promql_parser.parse(promql)
    except Exception as e:  # the parser raises ValueError with its message
        errors.append(f"{where}: does not parse as PromQL ({e}): {expr}")
        return
    selectors, groupings = [], []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            groupings.append(list(node.modifier.labels))
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            if node.modifier.matching is not None:
                groupings.append(list(node.modifier.matching.labels))
            if node.modifier.card is not None:
                groupings.append(list(getattr(node.modifier.card, "labels", None) or []))
        return True

    promql_parser.walk(ast, visit)
    all_labels = set()
    for sel in selectors:
        matchers = list(sel.matchers.matchers) + [m for ms in sel.matchers.or_matchers for m in ms]
        name = sel.name or next((m.value for m in matchers if m.name == "__name__"), None)
        if not name:
            errors.append(f"{where}: a selector without a metric name: {expr}")
            continue
        if not name.startswith("skygate_"):
            errors.append(f"{where}: `{name}` is not a Skygate metric: {expr}")
            continue
        r = resolve(name, metrics)
        if r is None:
            errors.append(f"{where}: `{name}` is not a metric in gateway/src/metrics.rs: {expr}")
            continue
        base, labels = r
        used.add(base)
        all_labels |= labels
        for m in matchers:
            if m.name != "__name__" and m.name not in labels:
                errors.append(f"{where}: `{name}` has no label `{m.name}` (it has {sorted(labels) or 'none'}): {expr}")
    for group in groupings:
        for label in group:
            if label not in all_labels:
                errors.append(f"{where}: groups by `{label}`, which none of its metrics has: {expr}")


def main():
    metrics_rs = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "gateway/src/metrics.rs"
    dashboard = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "deploy/grafana/skygate-dashboard.json"
    metrics = metrics_from_rust(metrics_rs.read_text())
    try:
        dash = json.loads(dashboard.read_text())
    except json.JSONDecodeError as e:
        sys.exit(f"{dashboard}: not JSON: {e}")
    errors, used = [], set()
    variables = dash.get("templating", {}).get("list", [])
    defined = {v.get("name") for v in variables}
    if "DS_PROMETHEUS" not in defined or not any(
        v.get("name") == "DS_PROMETHEUS" and v.get("type") == "datasource" and v.get("query") == "prometheus"
        for v in variables
    ):
        errors.append("templating: no `DS_PROMETHEUS` variable of type datasource (prometheus)")
    for v in variables:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        where = f"variable ${v.get('name')}"
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", q)
        if m:
            series, label = m.groups()
            check_expr(series, metrics, defined, where, errors, used)
            sel = re.match(r"(skygate_\w+)", series)
            r = resolve(sel.group(1), metrics) if sel else None
            if r and label not in r[1]:
                errors.append(f"{where}: `{sel.group(1)}` has no label `{label}`")
        else:
            check_expr(q, metrics, defined, where, errors, used)

    def all_panels(panels):
        for p in panels:
            yield p
            yield from all_panels(p.get("panels", []))

    ids, n_exprs, n_panels = set(), 0, 0
    for p in all_panels(dash.get("panels", [])):
        where = f"panel {p.get('id')} `{p.get('title')}`"
        if p.get("id") in ids:
            errors.append(f"{where}: id {p.get('id')} is used twice")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            errors.append(f"{where}: no gridPos")
        if p.get("type") == "row":
            continue
        n_panels += 1
        if (p.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
            errors.append(f"{where}: data source is not ${{DS_PROMETHEUS}}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no query")
        for t in targets:
            if (t.get("datasource") or {}).get("uid", "${DS_PROMETHEUS}") != "${DS_PROMETHEUS}":
                errors.append(f"{where} query {t.get('refId')}: data source is not ${{DS_PROMETHEUS}}")
            expr = t.get("expr")
            if not expr:
                errors.append(f"{where} query {t.get('refId')}: no expr")
                continue
            n_exprs += 1
            check_expr(expr, metrics, defined, f"{where} query {t.get('refId')}", errors, used)

    for e in errors:
        print(f"{dashboard}: {e}", file=sys.stderr)
    if errors:
        print(f"check-dashboard: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    unused = sorted(set(metrics) - used)
    print(f"ok   {dashboard.relative_to(ROOT) if dashboard.is_relative_to(ROOT) else dashboard}: "
          f"{n_panels} panels, {n_exprs} queries, {len(used)} of the {len(metrics)} metrics in metrics.rs"
          + (f" (not shown: {', '.join(unused)})" if unused else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
