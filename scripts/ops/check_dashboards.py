#!/usr/bin/env python3
"""Proves the dashboards and alert rules show real data: runs a real Prometheus against a coordinator and evaluates
every PromQL expression of every Grafana panel target, every dashboard variable and every alert rule through
Prometheus's HTTP API.

Steps: write a Prometheus config that reuses the compose stack's `confide-coordinator` scrape job
(dashboards/prometheus/prometheus.yml) with the given coordinator as its only target and loads the alert rules; start
`prometheus` on a free loopback port; wait until the coordinator has been scraped; optionally run a workload command
(e.g. rounds with real agents) while Prometheus scrapes, then let a few more scrapes happen; evaluate.

Template variables are substituted the way Grafana would: dashboard variables are resolved through Prometheus
(`label_values(...)`), and every expression is evaluated with every multi-value variable at "All" (must show data) and
with each single-value selection (every one must be valid, at least one must show data: a study without rounds rightly
shows empty round panels); $__rate_interval, $__interval and $__range cover the whole observation, as when the
dashboard's time range is the checked period.

A panel or variable query fails if Prometheus rejects it, if it returns no series, or if all its values are NaN.
An alert rule fails if Prometheus rejects it or if the quantity it watches (the left side of its top-level comparison,
e.g. `spent / budget` in `spent / budget >= 0.9`) returns no data: an alert that is quiet is healthy, but an alert
watching a metric that does not exist can never fire. Rules must also be evaluated by Prometheus without error.

The coordinator must keep running until the check ends: gauges of a target that stops answering go stale at once and
would show no data. So start the coordinator, run this check with the rounds as its workload, then stop the coordinator.
"""
import argparse
import json
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
JOB = "confide-coordinator"


# ------------------------------------------------------------------ PromQL text helpers
def top_level_comparison(expr: str):
    """Splits `lhs OP rhs` at the first comparison operator outside brackets and strings.

    Returns (lhs, op) or None when there is no top-level comparison or when a set operator (and/or/unless) is also
    at top level (then the comparison is not the outermost operation)."""
    depth = 0
    i = 0
    found = None
    n = len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            two = expr[i:i + 2]
            if two in ("==", "!=", ">=", "<="):
                found = found or (expr[:i].strip(), two)
                i += 2
                continue
            if c in "<>":
                found = found or (expr[:i].strip(), c)
            m = re.match(r"(and|or|unless)\b", expr[i:])
            if m and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] == "_")):
                return None
        i += 1
    return found


def grafana_regex_escape(value: str) -> str:
    """Escapes a variable value for a regex matcher inside a PromQL string, as Grafana's Prometheus datasource does."""
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\\\1", value)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replaces $name, ${name}, ${name:format} and [[name]] with values[name]; unknown names are left in place."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, m.group(0))
    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def leftover_variables(expr: str) -> list[str]:
    # Ignore `$` inside label-matcher regexes such as "...$" by only looking for $ followed by a name character.
    return re.findall(r"\$\{?\w+\}?|\[\[\w+\]\]", expr)


def duration(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


# ------------------------------------------------------------------ Prometheus
class Prometheus:
    def __init__(self, workdir: pathlib.Path, target: str, scheme: str, rules: pathlib.Path, base_config: pathlib.Path,
                 scrape_interval: float):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = yaml.safe_load(base_config.read_text(encoding="utf-8"))
        jobs = [j for j in base.get("scrape_configs") or [] if j.get("job_name") == JOB]
        if not jobs:
            raise SystemExit(f"{base_config}: no scrape job {JOB}")
        job = dict(jobs[0])
        job["static_configs"] = [{"targets": [target]}]
        job["scheme"] = scheme
        job.pop("file_sd_configs", None)
        config = {
            "global": {"scrape_interval": f"{round(scrape_interval * 1000)}ms",
                       "evaluation_interval": f"{round(scrape_interval * 1000)}ms",
                       "scrape_timeout": f"{round(scrape_interval * 1000)}ms"},
            "rule_files": [str(rules.resolve())],
            "scrape_configs": [job],
        }
        self.metrics_path = job.get("metrics_path", "/metrics")
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self.proc = None

    def start(self):
        binary = shutil.which("prometheus")
        if not binary:
            raise SystemExit("prometheus not found (scripts/check-dashboards.sh installs the Debian package)")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.config_path}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"prometheus exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise SystemExit("prometheus did not become ready within 60 s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, path: str, **params):
        url = f"{self.url}/api/v1/{path}"
        query = urllib.parse.urlencode(params, doseq=True)
        # query and series accept form posts (no URL length limit); the other endpoints are GET only.
        if path in ("query", "query_range", "series"):
            req = urllib.request.Request(url, data=query.encode())
        else:
            req = urllib.request.Request(f"{url}?{query}" if query else url)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            try:
                return json.load(e)
            except json.JSONDecodeError:
                return {"status": "error", "error": f"HTTP {e.code}"}

    def query(self, expr: str, at: float | None = None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)

    def scalar(self, expr: str) -> float | None:
        r = self.query(expr)
        res = (r.get("data") or {}).get("result") or []
        if r.get("status") != "success" or not res:
            return None
        return float(res[0]["value"][1])


def lint_exposition(url: str) -> None:
    """Prints `promtool check metrics` findings on the coordinator's exposition (naming conventions; advisory only)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
    except (urllib.error.URLError, OSError) as e:
        print(f"note: could not fetch {url} for linting: {e}", flush=True)
        return
    lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    findings = (lint.stdout + lint.stderr).decode(errors="replace").strip()
    print(f"note: promtool check metrics on {url}: " + (findings.replace("\n", "; ") if findings else "no findings"), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ expressions
class Expr:
    def __init__(self, source: str, kind: str, text: str, dashboard: dict | None = None, variable: dict | None = None):
        self.source, self.kind, self.text, self.dashboard, self.variable = source, kind, text, dashboard, variable


def dashboard_expressions(folder: pathlib.Path):
    out = []
    dashboards = []
    for f in sorted(folder.glob("*.json")):
        d = json.loads(f.read_text(encoding="utf-8"))
        dashboards.append((f, d))

        def walk(panels):
            for p in panels or []:
                for t in p.get("targets") or []:
                    if t.get("hide"):
                        continue
                    if "expr" in t:
                        out.append(Expr(f"{f.name}: panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}",
                                        "panel", t["expr"], d))
                walk(p.get("panels"))
        walk(d.get("panels"))
    return dashboards, out


# Panels that must exist, each with a query on a metric (and, like every panel, real data at evaluation time): the
# privacy-utility curve of federated evaluation (issue #14).
REQUIRED_PANELS = [("confide-privacy", "Accuracy vs ε spent, per round", "confide_model_accuracy")]


def required_panels(dashboards) -> list[tuple[str, bool, str]]:
    """(what, ok, detail) per required panel: present in its dashboard with a query on its metric."""
    out = []
    for uid, title, metric in REQUIRED_PANELS:
        found = []
        for _f, d in dashboards:
            if d.get("uid") != uid:
                continue

            def walk(panels):
                for p in panels or []:
                    if p.get("title") == title:
                        found.append(p)
                    walk(p.get("panels"))
            walk(d.get("panels"))
        queried = any(metric in (t.get("expr") or "") for p in found for t in p.get("targets") or [])
        out.append((f"{uid}: panel {title!r}", bool(found) and queried,
                    "present, querying " + metric if found and queried else
                    ("missing" if not found else f"does not query {metric}")))
    return out


def rule_expressions(path: pathlib.Path):
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out = []
    for g in doc.get("groups") or []:
        for r in g.get("rules") or []:
            name = r.get("alert") or r.get("record")
            out.append(Expr(f"{path.name}: {'alert' if 'alert' in r else 'record'} {name}",
                            "alert" if "alert" in r else "record", r["expr"]))
    return out


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*?)\s*,\s*)?(\w+)\s*\)\s*$", re.S)


def resolve_variable(prom: Prometheus, var: dict, values: dict[str, str], start: float) -> list[str]:
    """Values a query variable would offer, through Prometheus's series API (as Grafana's label_values does)."""
    q = var.get("query")
    q = q.get("query") if isinstance(q, dict) else q or var.get("definition", "")
    m = LABEL_VALUES.match(substitute(q, values))
    if not m:
        raise ValueError(f"unsupported variable query {q!r} (only label_values(...) is understood)")
    selector, label = m.group(1), m.group(2)
    if selector:
        r = prom.api("series", **{"match[]": selector, "start": f"{start:.3f}"})
        if r.get("status") != "success":
            raise ValueError(f"series query for {selector!r} failed: {r.get('error')}")
        vals = sorted({s[label] for s in r["data"] if label in s})
    else:
        r = prom.api(f"label/{label}/values")
        vals = sorted(r.get("data") or [])
    return vals


def fixed_value(var: dict) -> str:
    """The current value of a custom/interval/constant/textbox variable."""
    cur = (var.get("current") or {}).get("value")
    if isinstance(cur, list):
        cur = cur[0] if cur else ""
    if cur in (None, "", "$__all"):
        opts = [o.strip() for o in str(var.get("query", "")).split(",") if o.strip()]
        cur = opts[0] if opts else ""
    return str(cur)


MAX_SELECTIONS = 64


def variable_passes(prom: Prometheus, dashboard: dict, builtins: dict[str, str], start: float, report):
    """Substitution values for a dashboard: (values with every multi-value variable at "All", or None if a variable
    cannot be resolved; [(description, values)] for every single-value selection, variables resolved in order as
    Grafana chains them, at most MAX_SELECTIONS)."""
    variables = (dashboard.get("templating") or {}).get("list") or []
    uid = dashboard.get("uid")
    all_values = dict(builtins)
    for var in variables:
        name, vtype = var.get("name"), var.get("type")
        if vtype == "query":
            try:
                offered = resolve_variable(prom, var, all_values, start)
            except ValueError as e:
                report(f"{uid}: variable ${name}", "all", False, str(e))
                return None, []
            report(f"{uid}: variable ${name}", "all", bool(offered),
                   f"{len(offered)} value(s): {', '.join(offered[:6])}" if offered else "offers no values")
            if not offered:
                return None, []
            if var.get("includeAll"):
                all_values[name] = var.get("allValue") or "(" + "|".join(grafana_regex_escape(v) for v in offered) + ")"
            else:
                all_values[name] = grafana_regex_escape(offered[0]) if var.get("multi") else offered[0]
        elif vtype in ("custom", "interval", "constant", "textbox"):
            all_values[name] = fixed_value(var)
        else:
            report(f"{uid}: variable ${name}", "all", False, f"unsupported variable type {vtype}")
            return None, []

    selections = []

    def walk(i, values, desc):
        if len(selections) >= MAX_SELECTIONS:
            return
        if i == len(variables):
            selections.append((", ".join(desc) or "no variables", values))
            return
        var = variables[i]
        name = var.get("name")
        if var.get("type") != "query":
            walk(i + 1, dict(values, **{name: fixed_value(var)}), desc)
            return
        try:
            offered = resolve_variable(prom, var, values, start)
        except ValueError as e:
            report(f"{uid}: variable ${name}", "one", False, f"with {', '.join(desc)}: {e}")
            return
        for v in offered:
            walk(i + 1, dict(values, **{name: grafana_regex_escape(v) if var.get("multi") or var.get("includeAll") else v}),
                 desc + [f"{name}={v}"])

    walk(0, dict(builtins), [])
    return all_values, selections


def judge(resp: dict, need_data: bool):
    """(ok, detail) for an instant-query response."""
    if resp.get("status") != "success":
        return False, f"rejected by Prometheus: {resp.get('errorType', '')}: {resp.get('error')}"
    data = resp["data"]
    rtype = data.get("resultType")
    warn = f" (warnings: {'; '.join(resp['warnings'])})" if resp.get("warnings") else ""
    if rtype == "scalar" or rtype == "string":
        return True, f"{rtype} {data['result'][1]}{warn}"
    if rtype == "matrix":
        return False, "returns a range vector: a panel or rule needs an instant vector or scalar"
    series = data.get("result") or []
    if not series:
        return (not need_data), ("no data" if need_data else "valid, no series (not required)") + warn
    vals = [float(s["value"][1]) for s in series]
    finite = [v for v in vals if not math.isnan(v)]
    if need_data and not finite:
        return False, f"{len(series)} series, all NaN{warn}"
    sample = series[0]["metric"]
    label = ",".join(f"{k}={v}" for k, v in sorted(sample.items()) if k not in ("job", "instance"))
    return True, f"{len(series)} series, e.g. {{{label}}} = {series[0]['value'][1]}" + (
        f", {len(vals) - len(finite)} NaN" if len(finite) < len(vals) else "") + warn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("coordinator", help="coordinator base URL, e.g. http://127.0.0.1:8080 (scraped at the job's metrics_path)")
    ap.epilog = ("After `--`: a workload command to run while Prometheus scrapes, e.g. a script that runs rounds with real "
                 "agents; it gets COORDINATOR_URL and PROMETHEUS_URL in its environment.")
    ap.add_argument("--dashboards", type=pathlib.Path, default=ROOT / "dashboards" / "grafana")
    ap.add_argument("--rules", type=pathlib.Path, default=ROOT / "dashboards" / "prometheus" / "alerts.yml")
    ap.add_argument("--prometheus-config", type=pathlib.Path, default=ROOT / "dashboards" / "prometheus" / "prometheus.yml",
                    help="config whose confide-coordinator job is reused (default: the compose stack's)")
    ap.add_argument("--scrape-interval", type=float, default=1.0, help="seconds (default 1)")
    ap.add_argument("--min-scrapes", type=int, default=3, help="successful scrapes before the workload starts (default 3)")
    ap.add_argument("--observe", type=float, default=0.0,
                    help="seconds to keep scraping after the first scrapes when there is no workload (default 0)")
    ap.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the first scrapes (default 30)")
    ap.add_argument("--json", type=pathlib.Path, help="also write the results as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep Prometheus's work folder (config, log, TSDB) and print it")
    argv = sys.argv[1:]
    workload = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.workload = workload

    u = urllib.parse.urlsplit(args.coordinator)
    if u.scheme not in ("http", "https") or not u.hostname:
        ap.error(f"coordinator URL {args.coordinator!r} must look like http://host:port")
    target = f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"

    results = []

    def report(source, mode, ok, detail):
        results.append({"source": source, "pass": mode, "ok": ok, "detail": detail})
        print(f"{'ok  ' if ok else 'FAIL'}  [{mode:5}] {source}: {detail}", flush=True)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="confide-check-dashboards-"))
    prom = Prometheus(workdir, target, u.scheme, args.rules, args.prometheus_config, args.scrape_interval)
    try:
        prom.start()
        print(f"prometheus {prom.url} scraping {args.coordinator} every {args.scrape_interval:g}s (work folder {workdir})", flush=True)
        started = time.time()
        deadline = started + max(args.wait, (args.min_scrapes + 2) * args.scrape_interval)
        up_sel = f'up{{job="{JOB}"}}'
        while True:
            n = prom.scalar(f"sum_over_time({up_sel}[1h])")
            if n is not None and n >= args.min_scrapes:
                break
            if time.time() > deadline:
                targets = prom.api("targets").get("data", {}).get("activeTargets", [])
                errs = "; ".join(f"{t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError')}" for t in targets)
                raise SystemExit(f"the coordinator was not scraped successfully {args.min_scrapes} times: {errs}")
            time.sleep(args.scrape_interval / 2)
        print(f"coordinator scraped {int(n)} times", flush=True)
        lint_exposition(f"{u.scheme}://{target}{prom.metrics_path}")
        if args.workload:
            env = dict(os.environ, COORDINATOR_URL=args.coordinator, PROMETHEUS_URL=prom.url)
            print(f"running workload: {' '.join(args.workload)}", flush=True)
            rc = subprocess.run(args.workload, env=env).returncode
            if rc != 0:
                raise SystemExit(f"workload exited with status {rc}")
        elif args.observe > 0:
            time.sleep(args.observe)
        # Let the final state be scraped and the rules be evaluated on it.
        time.sleep(3 * args.scrape_interval + 0.5)

        now = time.time()
        window = duration(now - started + args.scrape_interval)
        builtins = {
            "__rate_interval": window, "__interval": window, "__range": window,
            "__range_s": str(math.ceil(now - started)), "__range_ms": str(math.ceil((now - started) * 1000)),
            "__interval_ms": str(math.ceil((now - started) * 1000)),
        }
        print(f"evaluating with $__range = $__rate_interval = $__interval = {window}", flush=True)

        dashboards, panel_exprs = dashboard_expressions(args.dashboards)
        if not panel_exprs:
            report(str(args.dashboards), "-", False, "no panel expressions found")
        for what, ok, detail in required_panels(dashboards):
            report(what, "panel", ok, detail)
        for f, d in dashboards:
            all_values, selections = variable_passes(prom, d, builtins, started - 3600, report)
            exprs = [x for x in panel_exprs if x.dashboard is d]
            if all_values is None:
                report(f.name, "-", False, f"variables could not be resolved: {len(exprs)} panel queries not evaluated")
                continue
            for e in exprs:
                text = substitute(e.text, all_values)
                left = leftover_variables(text)
                if left:
                    report(e.source, "all", False, f"unknown template variable(s) {', '.join(left)}")
                    continue
                ok, detail = judge(prom.query(text, now), need_data=True)
                report(e.source, "all", ok, detail)
                # One value per variable: every selection must be valid, and at least one must show data (a study
                # without rounds legitimately shows empty round panels).
                with_data, rejected, first_detail = [], None, None
                for desc, values in selections:
                    ok_one, detail_one = judge(prom.query(substitute(e.text, values), now), need_data=True)
                    first_detail = first_detail or detail_one
                    if detail_one.startswith("rejected"):
                        rejected = rejected or f"{desc}: {detail_one}"
                    elif ok_one:
                        with_data.append(desc)
                if rejected:
                    report(e.source, "one", False, rejected)
                elif not with_data:
                    report(e.source, "one", False, f"no data for any of {len(selections)} single-value selection(s), e.g. {first_detail}")
                else:
                    report(e.source, "one", True, f"data for {len(with_data)} of {len(selections)} single-value selection(s), e.g. {with_data[0]}")

        for e in rule_expressions(args.rules):
            ok, detail = judge(prom.query(e.text, now), need_data=(e.kind == "record"))
            report(e.source, "rule", ok, detail)
            if e.kind == "alert":
                split = top_level_comparison(e.text)
                watched = split[0] if split else e.text
                ok, detail = judge(prom.query(watched, now), need_data=True)
                report(e.source, "data", ok, f"watched quantity `{watched}`: {detail}")

        rules = prom.api("rules").get("data", {}).get("groups", [])
        loaded = [r for g in rules for r in g.get("rules", [])]
        if len(loaded) != len(rule_expressions(args.rules)):
            report("prometheus rules", "eval", False, f"{len(loaded)} rules loaded, expected {len(rule_expressions(args.rules))}")
        for r in loaded:
            healthy = r.get("health") == "ok"
            report(f"{args.rules.name}: {r.get('name')}", "eval", healthy,
                   f"evaluated by Prometheus: health {r.get('health')}, state {r.get('state', '-')}" + (f", error {r.get('lastError')}" if r.get("lastError") else ""))
    finally:
        prom.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    failed = [r for r in results if not r["ok"]]
    if args.json:
        args.json.write_text(json.dumps({"ok": not failed, "checked": len(results), "failed": len(failed), "results": results}, indent=2))
    print(f"check-dashboards: {len(results)} checks, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
