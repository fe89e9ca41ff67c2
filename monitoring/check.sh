#!/usr/bin/env bash
# Checks monitoring/:
#   1. promtool check rules + promtool test rules on the Prometheus alerts;
#   2. the Grafana dashboard is valid JSON, every query uses the ${DS_PROMETHEUS} input, and every panel query
#      is valid PromQL (each is checked by promtool as a recording rule, Grafana variables substituted);
#   3. every metric named in the dashboard's and the alerts' expressions is in metrics.txt (histograms by their
#      base name; `up` is Prometheus's own), and every name in metrics.txt is used. The Rust tests compare
#      metrics.txt with a real /metrics scrape of the daemon.
# Needs promtool (Debian: apt-get install prometheus) and python3 (standard library only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

command -v promtool >/dev/null || { echo "check.sh: promtool not found (Debian: apt-get install prometheus)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "check.sh: python3 not found" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check rules"
promtool check rules prometheus/smart-task-alerts.yml

echo "== promtool test rules"
(cd prometheus && promtool test rules smart-task-alerts.test.yml)

echo "== dashboard JSON"
python3 -m json.tool grafana/smart-task-dashboard.json >/dev/null
echo "ok: grafana/smart-task-dashboard.json parses"

echo "== metric names (metrics.txt) and dashboard PromQL"
python3 - grafana/smart-task-dashboard.json prometheus/smart-task-alerts.yml metrics.txt "$tmp/dashboard-rules.yml" <<'PY'
import json, re, sys

dash_path, alerts_path, list_path, rules_out = sys.argv[1:5]
PROMETHEUS_OWN = {"up"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan", "atan2"}
errors = []

def metric_names(expr):
    """Metric names a PromQL expression selects (functions, keywords, labels and variables left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)   # string literals
    e = re.sub(r"\{[^}]*\}", " ", e)                                             # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                            # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)                                     # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", e):
        word, rest = m.group(0), e[m.end():]
        if rest.lstrip().startswith("(") or word.lower() in KEYWORDS:
            continue                                                             # function or aggregation
        names.add(word)
    return names

# --- expressions of the dashboard
dash = json.load(open(dash_path))
exprs = []   # (where, expr, is_grafana)
def walk_panels(panels):
    for p in panels:
        for t in p.get("targets", []):
            where = f"dashboard panel {p.get('id')} \"{p.get('title')}\" target {t.get('refId')}"
            if "expr" in t:
                exprs.append((where, t["expr"], True))
            ds = t.get("datasource") or p.get("datasource") or {}
            if ds.get("uid") != "${DS_PROMETHEUS}":
                errors.append(f"{where}: datasource is {ds!r}, expected uid ${{DS_PROMETHEUS}}")
        walk_panels(p.get("panels", []))
walk_panels(dash.get("panels", []))
if not any(i.get("name") == "DS_PROMETHEUS" for i in dash.get("__inputs", [])):
    errors.append("dashboard: no DS_PROMETHEUS entry in __inputs")
ids = [p["id"] for p in dash.get("panels", [])]
if len(ids) != len(set(ids)):
    errors.append("dashboard: duplicate panel ids")
variable_metrics = set()
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    q = q.get("query", "") if isinstance(q, dict) else (q or "")
    m = re.match(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)", q)
    if m and "," in q:
        variable_metrics.add(m.group(1))

# --- expressions of the alert rules (no YAML library needed: `expr:` scalars, plain or block)
alert_exprs = []
lines = open(alerts_path).read().splitlines()
i = 0
while i < len(lines):
    m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
    if not m:
        i += 1
        continue
    indent, rest = len(m.group(1)), m.group(2).strip()
    if rest[:1] in (">", "|"):
        block = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i].strip())
            i += 1
        rest = " ".join(block)
    else:
        if rest[:1] in ("'", '"'):
            rest = rest[1:-1]
        i += 1
    alert_exprs.append(rest)
rule_count = len(re.findall(r"^\s*-\s+(?:alert|record):", open(alerts_path).read(), re.M))
if len(alert_exprs) != rule_count:
    errors.append(f"{alerts_path}: found {len(alert_exprs)} expr for {rule_count} rules")
exprs += [(f"{alerts_path} rule {n + 1}", e, False) for n, e in enumerate(alert_exprs)]

# --- compare with metrics.txt
listed = [l.strip() for l in open(list_path) if l.strip()]
listed_set = set(listed)
if len(listed) != len(listed_set):
    errors.append(f"{list_path}: duplicate names")
for name in listed:
    if not re.fullmatch(r"[a-zA-Z_:][\w:]*", name):
        errors.append(f"{list_path}: `{name}` is not a metric name")
    if name in PROMETHEUS_OWN:
        errors.append(f"{list_path}: `{name}` is Prometheus's own, the daemon does not export it")

def base(name):
    if name in listed_set or name in PROMETHEUS_OWN:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in listed_set:
            return name[: -len(suffix)]
    return None

used = set()
for where, expr, _ in exprs:
    names = metric_names(expr)
    if not names:
        errors.append(f"{where}: no metric found in `{expr}`")
    for n in sorted(names):
        b = base(n)
        if b is None:
            errors.append(f"{where}: metric `{n}` is not in {list_path}")
        else:
            used.add(b)
for n in sorted(variable_metrics):
    b = base(n)
    if b is None:
        errors.append(f"dashboard variable: metric `{n}` is not in {list_path}")
    else:
        used.add(b)
for n in listed:
    if n not in used:
        errors.append(f"{list_path}: `{n}` is used by neither the dashboard nor the alerts")

# --- every dashboard query as a recording rule, for promtool to parse (JSON is YAML)
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$job": ".*", "$instance": ".*"}
rules = []
for n, (where, expr, grafana) in enumerate(exprs):
    if not grafana:
        continue
    e = expr
    for k, v in subst.items():
        e = e.replace(k, v)
    if "$" in e:
        errors.append(f"{where}: unknown Grafana variable in `{expr}`")
    rules.append({"record": f"dashboard:query_{n}", "expr": e})
json.dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, open(rules_out, "w"), indent=1)

if errors:
    print("\n".join("FAIL: " + e for e in errors))
    sys.exit(1)
print(f"ok: {len(exprs)} expressions ({len(exprs) - len(alert_exprs)} dashboard, {len(alert_exprs)} alerts), "
      f"{len(listed)} metrics in {list_path}, all used and all listed")
PY
echo "== dashboard queries parse as PromQL (promtool)"
promtool check rules "$tmp/dashboard-rules.yml" | sed "s#${tmp}/##"

echo "monitoring check passed"
