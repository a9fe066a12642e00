#!/usr/bin/env python3
"""Generates the Grafana dashboards dashboards/grafana/confide-{privacy,operations}.json.

The JSON files are what Grafana provisions; this script is where they are written from, so that every panel shares one
datasource, one set of thresholds and the same PromQL building blocks. After changing it run
`scripts/ops/generate_dashboards.py`; `--check` (run by scripts/check-compose.sh) fails when the committed JSON differs.
Metric names and labels are the coordinator's (coordinator/src/metrics.rs).
"""
import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
DS = {"type": "prometheus", "uid": "confide-prometheus"}
SEL = 'study=~"$study",participant=~"$participant"'
SPENT = f'confide_privacy_epsilon_spent{{{SEL}}}'
BUDGET = f'confide_privacy_epsilon_budget{{{SEL}}}'
COMPLETED_IN_WINDOW = 'sum by (study) (increase(confide_rounds_total{study=~"$study",outcome="completed"}[$window]))'
SPEND_PER_ROUND = f'delta({SPENT}[$window]) / on (study) group_left () {COMPLETED_IN_WINDOW}'
REMAINING = f'clamp_min({BUDGET} - {SPENT}, 0)'
ROUNDS_LEFT = f'floor({REMAINING} / ({SPEND_PER_ROUND}))'
RATIO = f'{SPENT} / {BUDGET}'
# The privacy-utility panel: check_dashboards.py requires it (and real data in it).
ACCURACY_VS_EPSILON_TITLE = "Accuracy vs ε spent, per round"

_id = [0]
def nid():
    _id[0] += 1
    return _id[0]

def target(expr, legend="", ref="A", instant=False, fmt=None):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto", "range": not instant, "instant": instant}
    if fmt: t["format"] = fmt
    return t

def thresholds(steps):
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}

BUDGET_STEPS = [("green", None), ("orange", 0.8), ("red", 1.0)]

def panel(kind, title, desc, grid, targets, unit=None, steps=None, options=None, custom=None, overrides=None, mappings=None, minv=None, maxv=None, decimals=None, transformations=None):
    d = {"unit": unit} if unit else {}
    if steps: d["thresholds"] = thresholds(steps)
    if custom: d["custom"] = custom
    if mappings: d["mappings"] = mappings
    if minv is not None: d["min"] = minv
    if maxv is not None: d["max"] = maxv
    if decimals is not None: d["decimals"] = decimals
    p = {"id": nid(), "type": kind, "title": title, "description": desc, "datasource": DS,
         "gridPos": dict(zip("xywh", grid)), "targets": targets,
         "fieldConfig": {"defaults": d, "overrides": overrides or []}, "options": options or {}}
    if transformations: p["transformations"] = transformations
    return p

def row(title, y):
    return {"id": nid(), "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}

def qvar(name, label, query, desc):
    return {"name": name, "label": label, "description": desc, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-variable"},
            "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0, "regex": ""}

def dashboard(uid, title, desc, tags, panels, variables, time_from="now-24h"):
    return {"uid": uid, "title": title, "description": desc, "tags": tags, "editable": False,
            "schemaVersion": 39, "version": 1, "refresh": "30s", "timezone": "utc", "graphTooltip": 1,
            "time": {"from": time_from, "to": "now"}, "timepicker": {}, "fiscalYearStartMonth": 0,
            "liveNow": False, "links": [{"title": "Confide dashboards", "type": "dashboards", "tags": ["confide"], "asDropdown": True, "includeVars": True, "keepTime": True}],
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
            "templating": {"list": variables}, "panels": panels}

ts_custom = {"drawStyle": "line", "lineWidth": 2, "fillOpacity": 0, "showPoints": "never", "spanNulls": True}
legend_table = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"], "showLegend": True}, "tooltip": {"mode": "multi", "sort": "desc"}}
bargauge_opts = {"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True, "valueMode": "color", "namePlacement": "left", "minVizWidth": 8, "minVizHeight": 16, "sizing": "auto",
                 "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
stat_opts = {"colorMode": "background", "graphMode": "none", "justifyMode": "auto", "textMode": "value_and_name", "orientation": "auto", "wideLayout": True, "showPercentChange": False,
             "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
NAN_MAP = [{"type": "special", "options": {"match": "nan", "result": {"text": "no completed round in window", "index": 0}}}]

# ---------------- privacy ----------------
_id[0] = 0
pv = []
pv.append(row("Budget at a glance", 0))
pv.append(panel("bargauge", "Share of ε budget spent, per participant",
    "ε spent ÷ ε budget for each participant (hospital) and study, as the coordinator's ledger records it (PLD accountant over every round the participant's input was aggregated in). Orange from 80 %, red at 100 %: the coordinator stops selecting a participant whose next round would exceed its budget.",
    (0, 1, 12, 9), [target(RATIO, "participant {{participant}} · study {{study}}", instant=True)], unit="percentunit", steps=BUDGET_STEPS, options=bargauge_opts, minv=0, maxv=1, decimals=1))
pv.append(panel("bargauge", "Remaining ε, per participant",
    "ε budget minus ε spent (never below 0): how much privacy loss this participant can still absorb in the study.",
    (12, 1, 12, 9), [target(REMAINING, "participant {{participant}} · study {{study}}", instant=True)], unit="none", steps=[("red", None), ("orange", 0.0001)], options=bargauge_opts, minv=0, decimals=3))
pv.append(panel("stat", "Projected rounds left at the current spend per round",
    "floor(remaining ε ÷ ε spent per completed round), where ε per round is the increase of the participant's ε spent over the projection window ($window) divided by the rounds of the study completed in that window. Linear extrapolation: composition makes later rounds cost slightly less, so the real number is at least this. ∞ = no spend in the window.",
    (0, 10, 24, 5), [target(ROUNDS_LEFT, "participant {{participant}} · study {{study}}", instant=True)], unit="none", steps=[("red", None), ("orange", 1), ("green", 5)], options=stat_opts, decimals=0, mappings=NAN_MAP))
pv.append(row("Over time", 15))
pv.append(panel("timeseries", "ε spent vs budget",
    "Solid: ε spent by each participant in each study. Dashed: that participant's budget. A step up is a completed round in which the participant's input was part of the aggregate; aborted rounds spend nothing.",
    (0, 16, 12, 10), [target(SPENT, "participant {{participant}} spent · study {{study}}", "A"), target(BUDGET, "participant {{participant}} budget · study {{study}}", "B")], unit="none", custom=ts_custom, options=legend_table, decimals=3,
    overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"}, "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}, {"id": "custom.lineWidth", "value": 1}]}]))
pv.append(panel("timeseries", "Share of ε budget spent",
    "ε spent ÷ budget over time, with the 80 % and 100 % thresholds drawn.",
    (12, 16, 12, 10), [target(RATIO, "participant {{participant}} · study {{study}}")], unit="percentunit", steps=BUDGET_STEPS, minv=0, decimals=1,
    custom=dict(ts_custom, thresholdsStyle={"mode": "line+area"}), options=legend_table))
pv.append(panel("timeseries", "ε spent per completed round (over $window)",
    "Increase of ε spent over the projection window divided by the rounds of the study completed in it: the spend rate used by the projection above.",
    (0, 26, 12, 9), [target(SPEND_PER_ROUND, "participant {{participant}} · study {{study}}")], unit="none", custom=ts_custom, options=legend_table, decimals=4))
pv.append(panel("table", "Budget ledger (now)",
    "One row per participant and study: ε budget, ε spent, share spent, remaining, and the projected rounds left.",
    (12, 26, 12, 9), [target(BUDGET, "", "A", True, "table"), target(SPENT, "", "B", True, "table"), target(RATIO, "", "C", True, "table"), target(REMAINING, "", "D", True, "table"), target(ROUNDS_LEFT, "", "E", True, "table")],
    unit="none", decimals=3, options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": ""}},
    transformations=[{"id": "merge", "options": {}}, {"id": "organize", "options": {"excludeByName": {"Time": True, "job": True, "instance": True, "__name__": True},
        "indexByName": {"study": 0, "participant": 1, "Value #A": 2, "Value #B": 3, "Value #C": 4, "Value #D": 5, "Value #E": 6},
        "renameByName": {"Value #A": "ε budget", "Value #B": "ε spent", "Value #C": "share spent", "Value #D": "ε remaining", "Value #E": "rounds left (projected)"}}}],
    overrides=[{"matcher": {"id": "byName", "options": "share spent"}, "properties": [{"id": "unit", "value": "percentunit"}, {"id": "thresholds", "value": thresholds(BUDGET_STEPS)}, {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
               {"matcher": {"id": "byName", "options": "rounds left (projected)"}, "properties": [{"id": "decimals", "value": 0}, {"id": "mappings", "value": NAN_MAP}]}]))
pv.append(panel("alertlist", "Privacy and round alerts", "Alerts of the Prometheus rules in dashboards/prometheus/alerts.yml (budget ≥ 90 %, budget exhausted, round aborted, coordinator down).",
    (0, 35, 24, 6), [], options={"viewMode": "list", "groupMode": "default", "groupBy": [], "maxItems": 20, "sortOrder": 1, "dashboardAlerts": False, "alertName": "Confide", "alertInstanceLabelFilter": "", "datasource": "Prometheus",
        "stateFilter": {"firing": True, "pending": True, "noData": False, "normal": False, "error": True}}))
pv.append(row("Privacy and utility", 41))
pv.append(panel("timeseries", ACCURACY_VS_EPSILON_TITLE,
    "Left axis: accuracy of the study's latest evaluated model on the hospitals' held-out records (federated evaluation: each site's correct predictions and count released with DP noise inside secure aggregation; the std of that noise is in GET /v1/studies/{id}/metrics). Right axis: the largest ε spent by any participant of the study. Each evaluation round steps both: the privacy-utility curve to steer by — when accuracy stops rising while ε keeps growing, more rounds buy little.",
    (0, 42, 24, 10), [target('confide_model_accuracy{study=~"$study"}', "accuracy · study {{study}}", "A"),
                      target(f'max by (study) ({SPENT})', "max ε spent · study {{study}}", "B")],
    unit="percentunit", minv=0, decimals=3, custom=dict(ts_custom, lineInterpolation="stepAfter", showPoints="always"), options=legend_table,
    overrides=[{"matcher": {"id": "byFrameRefID", "options": "B"}, "properties": [{"id": "custom.axisPlacement", "value": "right"}, {"id": "unit", "value": "none"},
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}]))
privacy = dashboard("confide-privacy", "Confide · Privacy budgets", "ε spent against each participant's budget, per study, from the coordinator's privacy ledger.", ["confide", "privacy"], pv, [
    qvar("study", "Study", "label_values(confide_privacy_epsilon_budget, study)", "Study id (label `study` of the coordinator's metrics: the numeric id of the operator API)."),
    qvar("participant", "Participant", 'label_values(confide_privacy_epsilon_budget{study=~"$study"}, participant)', "Participant id (numeric id of the participant API; see the study's participant list for names)."),
    {"name": "window", "label": "Projection window", "description": "Window over which ε spent per round is measured for the projection.", "type": "custom", "query": "1h,6h,24h,7d,30d",
     "current": {"selected": True, "text": "24h", "value": "24h"}, "options": [{"selected": v == "24h", "text": v, "value": v} for v in ["1h", "6h", "24h", "7d", "30d"]], "hide": 0, "multi": False, "includeAll": False}],
    time_from="now-7d")

# ---------------- operations ----------------
_id[0] = 0
S = 'study=~"$study"'
RI = "$__rate_interval"
HTTP_RATE = f'rate(confide_http_requests_total[{RI}])'
op = []
op.append(row("Service", 0))
up_map = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red", "index": 0}, "1": {"text": "UP", "color": "green", "index": 1}}}]
op.append(panel("stat", "Coordinator", "Prometheus's `up` for the coordinator scrape job: DOWN when /metrics cannot be scraped (alert ConfideCoordinatorDown after 2 minutes).",
    (0, 1, 4, 4), [target('up{job="confide-coordinator"}', "{{instance}}", instant=True)], steps=[("red", None), ("green", 1)], mappings=up_map, options=stat_opts))
op.append(panel("stat", "Requests / s", "All HTTP requests served by the coordinator (operator and participant API).",
    (4, 1, 5, 4), [target(f'sum({HTTP_RATE})', "requests/s")], unit="reqps", steps=[("blue", None)], options=dict(stat_opts, graphMode="area", colorMode="value")))
op.append(panel("stat", "Server errors (5xx share)", "Share of requests answered with a 5xx status. Client errors (4xx) are expected for rejected input and are shown per route below.",
    (9, 1, 5, 4), [target(f'(sum(rate(confide_http_requests_total{{status=~"5.."}}[{RI}])) or vector(0)) / sum({HTTP_RATE})', "5xx share")], unit="percentunit", steps=[("green", None), ("orange", 0.01), ("red", 0.05)], options=dict(stat_opts, graphMode="area"), decimals=2))
op.append(panel("stat", "Rounds in range", "Rounds that ended in the selected time range, by outcome (completed: model published and budgets charged; aborted: nothing published, nothing spent).",
    (14, 1, 10, 4), [target(f'sum by (outcome) (increase(confide_rounds_total{{{S}}}[$__range]))', "{{outcome}}", instant=True)], unit="none", decimals=0, steps=[("blue", None)], options=dict(stat_opts, colorMode="value")))
op.append(row("Rounds", 5))
op.append(panel("timeseries", "Rounds by outcome (per hour)", "Rate of rounds ending, per study and outcome, in rounds per hour.",
    (0, 6, 12, 8), [target(f'sum by (study, outcome) (rate(confide_rounds_total{{{S}}}[{RI}])) * 3600', "{{outcome}} · study {{study}}")], unit="none", custom=dict(ts_custom, drawStyle="line", fillOpacity=20), options=legend_table, decimals=2,
    overrides=[{"matcher": {"id": "byRegexp", "options": "^aborted.*"}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]}]))
op.append(panel("timeseries", "Stage duration (p50 / p95)", "Time each secure-aggregation stage took (advertise_keys → share_keys → share_verification → masked_input_collection → consistency_check → unmasking; share_verification and consistency_check only in malicious-model rounds), from the coordinator's stage-duration histogram. A stage that waits for its deadline shows the deadline here.",
    (12, 6, 12, 8), [target(f'histogram_quantile(0.5, sum by (le, stage) (rate(confide_round_stage_duration_seconds_bucket[{RI}])))', "p50 {{stage}}", "A"),
                     target(f'histogram_quantile(0.95, sum by (le, stage) (rate(confide_round_stage_duration_seconds_bucket[{RI}])))', "p95 {{stage}}", "B")], unit="s", custom=ts_custom, options=legend_table))
op.append(panel("bargauge", "Mean stage duration (range)", "Mean duration of each stage over the selected time range (sum ÷ count of the histogram).",
    (0, 14, 8, 8), [target('sum by (stage) (increase(confide_round_stage_duration_seconds_sum[$__range])) / sum by (stage) (increase(confide_round_stage_duration_seconds_count[$__range]))', "{{stage}}", instant=True)], unit="s", steps=[("blue", None)], options=bargauge_opts))
op.append(panel("timeseries", "Participants per stage", "Participants in each set of the study's current or last round: selected, then those that completed advertise_keys (U1), share_keys (U2), share_verification (malicious-model rounds), masked_input_collection (U3), consistency_check (malicious-model rounds) and unmasking. A drop from one stage to the next is a dropout.",
    (8, 14, 8, 8), [target(f'confide_round_participants{{{S}}}', "{{stage}} · study {{study}}")], unit="none", decimals=0, custom=dict(ts_custom, lineInterpolation="stepAfter"), options=legend_table))
op.append(panel("bargauge", "Dropouts in range, by stage", "Participants that dropped out of a round in the selected range, by the stage they dropped at. The round still completes while at least the threshold survive each stage: the masks of those that drop after share_keys are removed with the survivors' shares.",
    (16, 14, 8, 8), [target(f'sum by (study, stage) (increase(confide_participant_dropouts_total{{{S}}}[$__range])) or sum by (study, stage) (confide_round_participants{{{S}}}) * 0', "{{stage}} · study {{study}}", instant=True)], unit="none", decimals=0, steps=[("green", None), ("orange", 1)], options=bargauge_opts))
op.append(panel("timeseries", "Dropouts (per hour)", "Rate of dropouts per study and stage, in participants per hour.",
    (0, 22, 24, 7), [target(f'sum by (study, stage) (rate(confide_participant_dropouts_total{{{S}}}[{RI}])) * 3600 or sum by (study, stage) (confide_round_participants{{{S}}}) * 0', "{{stage}} · study {{study}}")], unit="none", custom=dict(ts_custom, fillOpacity=20), options=legend_table, decimals=2))
op.append(row("HTTP API", 29))
op.append(panel("timeseries", "Requests / s by route and status", "Request rate of each route and HTTP status.",
    (0, 30, 12, 8), [target(f'sum by (route, status) ({HTTP_RATE})', "{{route}} {{status}}")], unit="reqps", custom=ts_custom, options=legend_table))
op.append(panel("timeseries", "Latency by route (p50 / p95 / p99)", "Request duration quantiles per route. Participant task polling is a long poll: its latency is the poll timeout by design.",
    (12, 30, 12, 8), [target(f'histogram_quantile({q}, sum by (le, route) (rate(confide_http_request_duration_seconds_bucket[{RI}])))', f"p{int(q*100)} {{{{route}}}}", r) for q, r in [(0.5, "A"), (0.95, "B"), (0.99, "C")]],
    unit="s", custom=ts_custom, options=legend_table))
op.append(panel("timeseries", "Error share by route (4xx / 5xx)", "Share of each route's requests answered with 4xx (rejected input, wrong credential, wrong stage) and 5xx (server errors). 0 when a route had no errors.",
    (0, 38, 24, 8), [target(f'(sum by (route) (rate(confide_http_requests_total{{status=~"{c}.."}}[{RI}])) or sum by (route) ({HTTP_RATE}) * 0) / sum by (route) ({HTTP_RATE})', f"{c}xx {{{{route}}}}", r) for c, r in [("4", "A"), ("5", "B")]],
    unit="percentunit", steps=[("green", None), ("red", 0.05)], custom=dict(ts_custom, thresholdsStyle={"mode": "off"}), options=legend_table, decimals=2))
operations = dashboard("confide-operations", "Confide · Operations", "Rounds, secure-aggregation stages, participants, dropouts and the coordinator's HTTP API.", ["confide", "operations"], op, [
    qvar("study", "Study", "label_values(confide_privacy_epsilon_budget, study)", "Study id (label `study`; every study with an enrolled participant). Stage durations and HTTP panels are not per study.")], time_from="now-6h")



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed JSON instead of writing it")
    args = ap.parse_args()
    stale = []
    for name, d in [("confide-privacy.json", privacy), ("confide-operations.json", operations)]:
        text = json.dumps(d, indent=2, ensure_ascii=False) + "\n"
        path = ROOT / "dashboards" / "grafana" / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("dashboards differ from scripts/ops/generate_dashboards.py (run it): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
