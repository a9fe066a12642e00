#!/usr/bin/env python3
"""Unit tests of the dashboards' PromQL arithmetic, with promtool (no server, no coordinator).

Takes the panel expressions from the dashboard JSON (substituting template variables as Grafana would), evaluates them
with `promtool test rules` on a synthetic history whose right answers are known, and compares: share of budget spent,
remaining ε, ε per round and the projected rounds left, rounds and dropouts in range, mean stage duration, error
shares. Values are exact in binary floating point or computed here with the same IEEE operation as in PromQL. Exit status 1 if any expectation fails.
"""
import json
import math
import pathlib
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from check_dashboards import substitute  # noqa: E402  (same substitution as the real-data check)

ROOT = pathlib.Path(__file__).resolve().parents[2]
J = 'job="confide-coordinator",instance="c:8080"'


def steps(values_per_block, block=10, tail=10):
    """promtool series notation: each value held for `block` minutes, the last one for `tail`."""
    parts = [f"{v}+0x{block - 1}" for v in values_per_block[:-1]]
    parts.append(f"{values_per_block[-1]}+0x{tail - 1}")
    return " ".join(parts)


# Study 1: rounds complete at minutes 10, 20, ..., 60; one round aborted at 35; participant 1 spends 0.125 and
# participant 2 0.0625 per completed round; budgets 1.0625 and 2 (participant 1 has 2.5 rounds' worth left: 2 whole rounds). Study 2: four rounds long before, nothing in the window.
SERIES = {
    f'confide_rounds_total{{{J},study="1",outcome="completed"}}': steps([0, 1, 2, 3, 4, 5, 6]),
    f'confide_rounds_total{{{J},study="1",outcome="aborted"}}': "0+0x34 1+0x34",
    f'confide_rounds_total{{{J},study="2",outcome="completed"}}': "4+0x69",
    f'confide_rounds_total{{{J},study="2",outcome="aborted"}}': "0+0x69",
    f'confide_privacy_epsilon_budget{{{J},study="1",participant="1"}}': "1.0625+0x69",
    f'confide_privacy_epsilon_spent{{{J},study="1",participant="1"}}': steps([0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75]),
    f'confide_privacy_epsilon_budget{{{J},study="1",participant="2"}}': "2+0x69",
    f'confide_privacy_epsilon_spent{{{J},study="1",participant="2"}}': steps([0, 0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375]),
    f'confide_privacy_epsilon_budget{{{J},study="2",participant="4"}}': "1+0x69",
    f'confide_privacy_epsilon_spent{{{J},study="2",participant="4"}}': "0.5+0x69",
    f'confide_round_participants{{{J},study="1",stage="masked_input_collection"}}': "3+0x69",
    f'confide_round_participants{{{J},study="1",stage="unmasking"}}': "2+0x69",
    f'confide_participant_dropouts_total{{{J},study="1",stage="masked_input_collection"}}': "0+0x44 1+0x24",
    f'confide_round_stage_duration_seconds_sum{{{J},stage="share_keys"}}': steps([0, 0.5, 1, 1.5, 2, 2.5, 3]),
    f'confide_round_stage_duration_seconds_count{{{J},stage="share_keys"}}': steps([0, 1, 2, 3, 4, 5, 6]),
    f'confide_http_requests_total{{{J},route="/v1/participant/task",status="200"}}': "0+3x69",
    f'confide_http_requests_total{{{J},route="/v1/participant/task",status="500"}}': "0+1x69",
    f'confide_http_requests_total{{{J},route="/healthz",status="200"}}': "0+4x69",
}
S1A = f'{J},study="1",participant="1"'
S1B = f'{J},study="1",participant="2"'
S2A = f'{J},study="2",participant="4"'
# (dashboard file, panel title, refId) -> expected samples {labels: value}
EXPECTED = {
    ("confide-privacy.json", "Share of ε budget spent, per participant", "A"): {S1A: 0.75 / 1.0625, S1B: 0.1875, S2A: 0.5},
    ("confide-privacy.json", "Remaining ε, per participant", "A"): {S1A: 0.3125, S1B: 1.625, S2A: 0.5},
    ("confide-privacy.json", "ε spent per completed round (over $window)", "A"): {S1A: 0.125, S1B: 0.0625, S2A: math.nan},
    ("confide-privacy.json", "Projected rounds left at the current spend per round", "A"): {S1A: 2, S1B: 26, S2A: math.nan},
    ("confide-operations.json", "Rounds in range", "A"): {'outcome="completed"': 6, 'outcome="aborted"': 1},
    ("confide-operations.json", "Dropouts in range, by stage", "A"): {'study="1",stage="masked_input_collection"': 1, 'study="1",stage="unmasking"': 0},
    ("confide-operations.json", "Mean stage duration (range)", "A"): {'stage="share_keys"': 0.5},
    ("confide-operations.json", "Server errors (5xx share)", "A"): {"": 0.125},  # 1 of 3 + 1 + 4 requests/min
    ("confide-operations.json", "Error share by route (4xx / 5xx)", "A"): {'route="/v1/participant/task"': 0, 'route="/healthz"': 0},
    ("confide-operations.json", "Error share by route (4xx / 5xx)", "B"): {'route="/v1/participant/task"': 0.25, 'route="/healthz"': 0},
    ("confide-operations.json", "Coordinator", "A"): {},  # no `up` in a promtool test: only checks the query parses
}
VALUES = {"study": ".*", "participant": ".*", "window": "1h", "__range": "1h", "__rate_interval": "5m", "__interval": "1m"}


def main() -> int:
    dashboards = {f.name: json.loads(f.read_text(encoding="utf-8")) for f in (ROOT / "dashboards" / "grafana").glob("*.json")}
    tests = []
    for (file, title, ref), samples in EXPECTED.items():
        panels = [p for p in dashboards[file]["panels"] if p.get("title") == title]
        if len(panels) != 1:
            print(f"{file}: no single panel titled {title!r}", file=sys.stderr)
            return 1
        targets = [t for t in panels[0]["targets"] if t.get("refId") == ref]
        expr = substitute(targets[0]["expr"], VALUES)
        finite = {lbl: v for lbl, v in samples.items() if not math.isnan(v)}
        tests.append({"expr": f"({expr}) == ({expr})" if len(finite) < len(samples) else expr, "eval_time": "65m",
                      "exp_samples": [{"labels": "{" + lbl + "}", "value": v} for lbl, v in finite.items()]})
        if len(finite) < len(samples):
            # NaN never equals NaN, so test which samples are NaN through `x != bool x` (1 exactly for NaN).
            tests.append({"expr": f"({expr}) != bool ({expr})", "eval_time": "65m",
                          "exp_samples": [{"labels": "{" + lbl + "}", "value": 1 if math.isnan(v) else 0} for lbl, v in samples.items()]})
    doc = {"rule_files": [], "evaluation_interval": "1m",
           "tests": [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in SERIES.items()],
                      "promql_expr_test": tests}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "dashboard_queries_test.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        r = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    print((r.stdout + r.stderr).strip())
    print(f"dashboard query unit tests: {len(tests)} expressions, {'all as expected' if r.returncode == 0 else 'FAILED'}")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
