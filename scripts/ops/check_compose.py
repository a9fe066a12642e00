#!/usr/bin/env python3
"""Static checks of the compose stack, its Dockerfiles, the Prometheus/Grafana configuration and the dashboards.

No Docker engine needed. Checks that every reference resolves:
- docker-compose.yml: build contexts and Dockerfiles exist, the files each Dockerfile COPYs from the context exist,
  bind-mounted files/folders exist, named volumes are declared (and declared ones used), depends_on targets exist and
  a `service_healthy` target has a health check, published host ports do not clash, every service has an image or build;
- Prometheus: scrape targets name compose services and the ports they listen on; rule files exist (promtool checks
  syntax separately);
- Grafana: datasource URLs name compose services; the dashboard provider's path is mounted from the folder holding the
  dashboards; every dashboard JSON parses, has a unique uid, unique panel ids, a non-empty query on every target, and
  uses only the provisioned datasource uid;
- deploy/: the participant slices are up to date and every participant.toml parses.
Prints one line per problem and exits 1 if there is any.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
problems: list[str] = []
notes: list[str] = []


def problem(msg: str) -> None:
    problems.append(msg)


def rel(p: pathlib.Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def load_yaml(path: pathlib.Path):
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problem(f"{rel(path)}: cannot parse: {e}")
        return None


# ---------------------------------------------------------------- compose
# Keys of the Compose Specification (compose-spec.io), to catch misspelt keys that Compose would reject.
TOP_KEYS = {"version", "name", "include", "services", "networks", "volumes", "secrets", "configs", "models"}
SERVICE_KEYS = set("""annotations attach build blkio_config cpu_count cpu_percent cpu_shares cpu_period cpu_quota
cpu_rt_runtime cpu_rt_period cpus cpuset cap_add cap_drop cgroup cgroup_parent command configs container_name
credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt dns_search domainname entrypoint
env_file label_file environment expose extends external_links extra_hosts gpus group_add healthcheck hostname image init
ipc isolation labels links logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit models network_mode
networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged profiles provider
pull_policy read_only restart runtime scale secrets security_opt shm_size stdin_open stop_grace_period stop_signal
storage_opt sysctls tmpfs tty ulimits use_api_socket user userns_mode uts volumes volumes_from working_dir""".split())
BUILD_KEYS = set("""context dockerfile dockerfile_inline args ssh cache_from cache_to additional_contexts entitlements
extra_hosts isolation privileged labels no_cache platforms pull secrets shm_size tags target ulimits network""".split())
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"}


def unknown_keys(where: str, mapping: dict, known: set) -> None:
    for k in mapping:
        if k not in known and not str(k).startswith("x-"):
            problem(f"{where}: unknown key {k!r}")


def volume_entries(svc: dict):
    """Yields (kind, source, target, read_only) for each entry of a service's `volumes`."""
    for v in svc.get("volumes") or []:
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) == 1:
                yield "anonymous", None, parts[0], False
                continue
            src, dst = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
            kind = "bind" if src.startswith((".", "/", "~")) else "volume"
            yield kind, src, dst, ro
        elif isinstance(v, dict):
            yield v.get("type", "volume"), v.get("source"), v.get("target"), bool(v.get("read_only"))


def host_ports(svc: dict):
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            if p.get("published") is not None:
                yield str(p.get("host_ip", "0.0.0.0")), str(p["published"]), str(p.get("protocol", "tcp"))
            continue
        s = str(p)
        proto = "tcp"
        if "/" in s:
            s, proto = s.split("/", 1)
        parts = s.rsplit(":", 2)
        if len(parts) == 3:
            yield parts[0], parts[1], proto
        elif len(parts) == 2:
            yield "0.0.0.0", parts[0], proto


def dockerfile_copy_sources(dockerfile: pathlib.Path):
    """Sources of COPY/ADD instructions that read from the build context (not --from=stage, not URLs)."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        words = line.strip().split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]) or len(args) < 2:
            continue
        for src in args[:-1]:
            if not re.match(r"^[a-z]+://", src):
                yield src


def check_dockerfile_stages(dockerfile: pathlib.Path, where: str) -> None:
    """Every `COPY --from=NAME` names an earlier build stage (or an image reference, which contains ':' or '/')."""
    stages = []
    for line in dockerfile.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        words = line.strip().split()
        if not words:
            continue
        if words[0].upper() == "FROM":
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.append(words[3].lower())
            else:
                stages.append(None)
        elif words[0].upper() in ("COPY", "ADD"):
            for w in words[1:]:
                if w.startswith("--from="):
                    ref = w.split("=", 1)[1]
                    if ref.lower() not in stages and not ref.isdigit() and not re.search(r"[:/]", ref):
                        problem(f"{where}: {rel(dockerfile)} copies from stage {ref!r}, which is not defined before it")
    if not stages:
        problem(f"{where}: {rel(dockerfile)} has no FROM")


def check_compose(path: pathlib.Path) -> dict:
    doc = load_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        problem(f"{rel(path)}: no `services` mapping")
        return {}
    base = path.parent
    unknown_keys(rel(path), doc, TOP_KEYS)
    services: dict = doc["services"]
    declared_volumes = set((doc.get("volumes") or {}).keys())
    used_volumes = set()
    published = {}
    for name, svc in services.items():
        where = f"{rel(path)}: service {name}"
        if not isinstance(svc, dict):
            problem(f"{where}: not a mapping")
            continue
        unknown_keys(where, svc, SERVICE_KEYS)
        if isinstance(svc.get("build"), dict):
            unknown_keys(f"{where}: build", svc["build"], BUILD_KEYS)
        if isinstance(svc.get("healthcheck"), dict):
            unknown_keys(f"{where}: healthcheck", svc["healthcheck"], HEALTHCHECK_KEYS)
        if "image" not in svc and "build" not in svc:
            problem(f"{where}: neither image nor build")
        build = svc.get("build")
        if build is not None:
            if isinstance(build, str):
                build = {"context": build}
            ctx = (base / build.get("context", ".")).resolve()
            if not ctx.is_dir():
                problem(f"{where}: build context {build.get('context')} is not a folder")
            else:
                df = ctx / build.get("dockerfile", "Dockerfile")
                if not df.is_file():
                    problem(f"{where}: Dockerfile {rel(df)} does not exist")
                else:
                    for src in dockerfile_copy_sources(df):
                        if not (ctx / src).exists() and not list(ctx.glob(src.lstrip("/"))):
                            problem(f"{where}: {rel(df)} copies {src}, which is not in the build context {rel(ctx)}")
                    check_dockerfile_stages(df, where)
                    ignore = df.with_name(df.name + ".dockerignore")
                    if not ignore.is_file() and not (ctx / ".dockerignore").is_file():
                        problem(f"{where}: no {rel(ignore)} or .dockerignore: target/ and .git would be sent as build context")
        for kind, src, dst, _ro in volume_entries(svc):
            if not dst or not str(dst).startswith("/"):
                problem(f"{where}: volume target {dst!r} is not an absolute container path")
            if kind == "bind":
                host = (base / pathlib.Path(src).expanduser()).resolve()
                if not host.exists():
                    problem(f"{where}: bind mount source {src} does not exist")
            elif kind == "volume":
                used_volumes.add(src)
                if src not in declared_volumes:
                    problem(f"{where}: named volume {src} is not declared under top-level `volumes`")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            if dep not in services:
                problem(f"{where}: depends_on unknown service {dep}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond not in ("service_started", "service_healthy", "service_completed_successfully"):
                problem(f"{where}: depends_on {dep} with unknown condition {cond}")
            if cond == "service_healthy" and not (services[dep] or {}).get("healthcheck"):
                problem(f"{where}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        hc = svc.get("healthcheck")
        if hc and not hc.get("disable") and not hc.get("test"):
            problem(f"{where}: healthcheck without test")
        for ip, port, proto in host_ports(svc):
            key = (port, proto)
            for other_ip, other in published.get(key, []):
                if ip == other_ip or "0.0.0.0" in (ip, other_ip):
                    problem(f"{where}: host port {port}/{proto} already published by service {other}")
            published.setdefault(key, []).append((ip, name))
        for ef in ([svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file") or []):
            efp = ef if isinstance(ef, str) else ef.get("path")
            required = True if isinstance(ef, str) else ef.get("required", True)
            if required and not (base / efp).is_file():
                problem(f"{where}: env_file {efp} does not exist")
    for unused in sorted(declared_volumes - used_volumes):
        problem(f"{rel(path)}: volume {unused} is declared but no service uses it")
    notes.append(f"compose: {len(services)} services, {len(declared_volumes)} named volumes, "
                 f"{sum(len(v) for v in published.values())} published ports")
    return doc


def bind_source_for(svc: dict, container_path: str, base: pathlib.Path):
    """Host path that a container path of `svc` resolves to through its bind mounts (longest matching target)."""
    best = None
    for kind, src, dst, _ro in volume_entries(svc):
        if kind != "bind" or not dst:
            continue
        dst = dst.rstrip("/")
        if container_path == dst or container_path.startswith(dst + "/"):
            if best is None or len(dst) > len(best[1]):
                best = (src, dst)
    if best is None:
        return None
    return (base / best[0]).resolve() / container_path[len(best[1]):].lstrip("/")


def service_ports(svc: dict) -> set[str]:
    """Container ports a service listens on as far as the compose file tells (ports, expose, --listen, healthcheck)."""
    ports = set()
    for p in svc.get("ports") or []:
        ports.add(str(p.get("target") if isinstance(p, dict) else str(p).split("/")[0].rsplit(":", 1)[-1]))
    ports.update(str(p) for p in svc.get("expose") or [])
    text = json.dumps([svc.get("command"), svc.get("healthcheck")])
    ports.update(re.findall(r"(?:--listen[ =]\S*?:|127\.0\.0\.1:|localhost:)(\d+)", text))
    return ports


# ---------------------------------------------------------------- prometheus / grafana
def check_prometheus(compose: dict, base: pathlib.Path) -> None:
    services = compose.get("services") or {}
    prom = services.get("prometheus")
    if not prom:
        problem("docker-compose.yml: no prometheus service")
        return
    cfg_path = bind_source_for(prom, "/etc/prometheus/prometheus.yml", base)
    if cfg_path is None or not cfg_path.is_file():
        problem("prometheus service: /etc/prometheus/prometheus.yml is not bind-mounted from a file of the repository")
        return
    cfg = load_yaml(cfg_path) or {}
    for rf in cfg.get("rule_files") or []:
        if not list(cfg_path.parent.glob(rf)):
            problem(f"{rel(cfg_path)}: rule file {rf} does not exist next to it")
    global_interval = (cfg.get("global") or {}).get("scrape_interval", "1m")
    for f in sorted((cfg_path.parent.parent / "provisioning" / "datasources").glob("*.y*ml")):
        for ds in (load_yaml(f) or {}).get("datasources") or []:
            ti = (ds.get("jsonData") or {}).get("timeInterval")
            if ds.get("type") == "prometheus" and ti != global_interval:
                problem(f"{rel(f)}: timeInterval {ti!r} differs from the scrape interval {global_interval!r} of {rel(cfg_path)}"
                        " ($__rate_interval would be wrong)")
    jobs = {j.get("job_name"): j for j in cfg.get("scrape_configs") or []}
    if "confide-coordinator" not in jobs:
        problem(f"{rel(cfg_path)}: no scrape job confide-coordinator (the dashboards and alerts select job=\"confide-coordinator\")")
    for job in jobs.values():
        for sc in job.get("static_configs") or []:
            for t in sc.get("targets") or []:
                host, _, port = t.rpartition(":")
                if host not in services:
                    problem(f"{rel(cfg_path)}: job {job.get('job_name')} scrapes {t}, but {host} is not a compose service")
                elif port not in service_ports(services[host]):
                    problem(f"{rel(cfg_path)}: job {job.get('job_name')} scrapes {t}, but service {host} does not listen on {port}")


def check_grafana(compose: dict, base: pathlib.Path) -> str | None:
    services = compose.get("services") or {}
    graf = services.get("grafana")
    if not graf:
        problem("docker-compose.yml: no grafana service")
        return None
    ds_dir = bind_source_for(graf, "/etc/grafana/provisioning/datasources", base)
    db_dir = bind_source_for(graf, "/etc/grafana/provisioning/dashboards", base)
    uid = None
    if ds_dir is None or not ds_dir.is_dir():
        problem("grafana service: /etc/grafana/provisioning/datasources is not mounted from a folder")
    else:
        for f in sorted(ds_dir.glob("*.y*ml")):
            for ds in (load_yaml(f) or {}).get("datasources") or []:
                if ds.get("type") == "prometheus":
                    uid = ds.get("uid")
                    host = re.match(r"https?://([^:/]+)(?::(\d+))?", ds.get("url", ""))
                    if not host or host.group(1) not in services:
                        problem(f"{rel(f)}: datasource url {ds.get('url')} does not name a compose service")
                    elif host.group(2) and host.group(2) not in service_ports(services[host.group(1)]) | {"9090"}:
                        problem(f"{rel(f)}: datasource url {ds.get('url')}: port not served by {host.group(1)}")
        if not uid:
            problem(f"{rel(ds_dir)}: no provisioned prometheus datasource with a uid")
    if db_dir is None or not db_dir.is_dir():
        problem("grafana service: /etc/grafana/provisioning/dashboards is not mounted from a folder")
    else:
        providers = [p for f in sorted(db_dir.glob("*.y*ml")) for p in (load_yaml(f) or {}).get("providers") or []]
        if not providers:
            problem(f"{rel(db_dir)}: no dashboard provider")
        for p in providers:
            path = (p.get("options") or {}).get("path", "")
            host = bind_source_for(graf, path, base)
            if host is None or not host.is_dir() or not list(host.glob("*.json")):
                problem(f"dashboard provider {p.get('name')}: path {path} is not mounted from a folder with dashboard JSON")
    return uid


def iter_panels(panels):
    for p in panels or []:
        yield p
        yield from iter_panels(p.get("panels"))


def check_dashboards(folder: pathlib.Path, uid: str | None) -> None:
    files = sorted(folder.glob("*.json"))
    if not files:
        problem(f"{rel(folder)}: no dashboards")
    uids = {}
    for f in files:
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            problem(f"{rel(f)}: invalid JSON: {e}")
            continue
        if not d.get("uid"):
            problem(f"{rel(f)}: dashboard without uid (links and provisioning need a stable one)")
        elif d["uid"] in uids:
            problem(f"{rel(f)}: uid {d['uid']} also used by {uids[d['uid']]}")
        uids[d.get("uid")] = rel(f)
        ids = {}
        n_targets = 0

        def check_ds(ds, where):
            if isinstance(ds, dict) and ds.get("type") in ("grafana", "datasource") and str(ds.get("uid", "")).startswith("-- "):
                return  # Grafana's built-in annotation source
            if not isinstance(ds, dict) or ds.get("uid") != uid:
                problem(f"{rel(f)}: {where}: datasource {ds!r} is not the provisioned datasource uid {uid!r}")

        for p in iter_panels(d.get("panels")):
            where = f"panel {p.get('id')} ({p.get('title')!r})"
            if not isinstance(p.get("id"), int):
                problem(f"{rel(f)}: {where}: panel id is not an integer")
            elif p["id"] in ids:
                problem(f"{rel(f)}: {where}: panel id {p['id']} also used by {ids[p['id']]!r}")
            ids[p.get("id")] = p.get("title")
            if p.get("type") == "row":
                continue
            if p.get("targets"):
                check_ds(p.get("datasource"), where)
            refs = set()
            for t in p.get("targets") or []:
                n_targets += 1
                check_ds(t.get("datasource", p.get("datasource")), f"{where} target {t.get('refId')}")
                if not str(t.get("expr", "")).strip():
                    problem(f"{rel(f)}: {where} target {t.get('refId')}: empty PromQL expression")
                if t.get("refId") in refs:
                    problem(f"{rel(f)}: {where}: refId {t.get('refId')} used twice")
                refs.add(t.get("refId"))
            gp = p.get("gridPos") or {}
            if not all(isinstance(gp.get(k), int) for k in "xywh") or gp["x"] + gp["w"] > 24:
                problem(f"{rel(f)}: {where}: gridPos {gp} is not a valid 24-column position")
        placed = [p for p in d.get("panels") or [] if isinstance(p.get("gridPos"), dict)]
        for i, a in enumerate(placed):
            for b in placed[i + 1:]:
                ga, gb = a["gridPos"], b["gridPos"]
                try:
                    if (ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
                            and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]):
                        problem(f"{rel(f)}: panels {a.get('title')!r} and {b.get('title')!r} overlap")
                except (KeyError, TypeError):
                    pass  # reported above as an invalid gridPos
        for v in (d.get("templating") or {}).get("list") or []:
            if v.get("type") == "query":
                check_ds(v.get("datasource"), f"variable ${v.get('name')}")
        for a in (d.get("annotations") or {}).get("list") or []:
            check_ds(a.get("datasource"), f"annotation {a.get('name')!r}")
        notes.append(f"{rel(f)}: {len(ids)} panels, {n_targets} queries, uid {d.get('uid')}")


# ---------------------------------------------------------------- deploy
def check_deploy(compose: dict, base: pathlib.Path) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "ops" / "generate_dashboards.py"), "--check"], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"scripts/ops/generate_dashboards.py --check: {r.stderr.strip() or r.stdout.strip()}")
    r = subprocess.run([sys.executable, str(ROOT / "deploy" / "make-slices.py"), "--check"], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"deploy/make-slices.py --check: {r.stderr.strip() or r.stdout.strip()}")
    for name, svc in (compose.get("services") or {}).items():
        cmd = svc.get("command") or []
        if isinstance(cmd, list) and "--config" in cmd and cmd.index("--config") + 1 < len(cmd):
            cfg = bind_source_for(svc, cmd[cmd.index("--config") + 1], base)
            if cfg is None or not cfg.is_file():
                problem(f"service {name}: config {cmd[cmd.index('--config') + 1]} is not bind-mounted from a file")
                continue
            try:
                conf = tomllib.loads(cfg.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as e:
                problem(f"{rel(cfg)}: invalid TOML: {e}")
                continue
            data = (conf.get("data") or {}).get("path")
            if data and (bind_source_for(svc, data, base) is None or not bind_source_for(svc, data, base).is_file()):
                problem(f"{rel(cfg)}: data file {data} is not mounted into service {name}")
            state = conf.get("state_dir")
            if state and not any(k == "volume" and dst == state for k, _s, dst, _r in volume_entries(svc)):
                problem(f"service {name}: state directory {state} is not on a named volume (identity and ledger would be lost)")
            if not (conf.get("data") or {}).get("dataset_id"):
                problem(f"{rel(cfg)}: no [data] dataset_id (the agent refuses to start without the dataset its budget belongs to)")
            ledger = (conf.get("budget") or {}).get("ledger")
            if ledger and not any(k == "volume" and dst and ledger.startswith(dst.rstrip("/") + "/")
                                  for k, _s, dst, _r in volume_entries(svc)):
                problem(f"service {name}: privacy ledger {ledger} is not on a named volume (a lost ledger resets the dataset's spent ε)")


def env_key(label: str) -> str:
    """The .env key `confide token create --label LABEL --env-file` writes (src/cli/ops/token.rs, env_key)."""
    key = "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in label)
    if key[:1].isdigit():
        key = "_" + key
    return key + "_ENROLMENT_TOKEN"


def check_init(compose: dict, base: pathlib.Path) -> None:
    """scripts/compose-init.sh: it parses, every hospital service of the compose file gets its enrolment token from
    it (the labels it uses become exactly the `${..._ENROLMENT_TOKEN}` variables the services read), the compose
    services it talks to exist, the bundled study file is a study `confide study create` can read (its model file
    exists, its schedule is automatic so that `docker compose up -d` trains), and agents without a token wait instead
    of exiting."""
    script = base / "scripts" / "compose-init.sh"
    if not script.is_file():
        problem("scripts/compose-init.sh does not exist")
        return
    if not os.access(script, os.X_OK):
        problem("scripts/compose-init.sh is not executable")
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    if r.returncode != 0:
        problem(f"scripts/compose-init.sh: bash -n: {r.stderr.strip()}")
    text = script.read_text(encoding="utf-8")
    m = re.search(r'^hospitals="([^"]*)"', text, re.M)
    if not m:
        problem('scripts/compose-init.sh: no hospitals="..." line (the labels of the enrolment tokens)')
        return
    labels = m.group(1).split()
    services = compose.get("services") or {}
    read = {}
    for name, svc in services.items():
        env = svc.get("environment") or {}
        value = env.get("CONFIDE_ENROLMENT_TOKEN") if isinstance(env, dict) else None
        if value is not None:
            v = re.fullmatch(r"\$\{([A-Z0-9_]+)(:?-[^}]*)?\}", str(value))
            if not v:
                problem(f"service {name}: CONFIDE_ENROLMENT_TOKEN is not read from a .env variable")
                continue
            read[v.group(1)] = name
            ep = svc.get("entrypoint")
            ep_text = " ".join(ep) if isinstance(ep, list) else str(ep or "")
            if "CONFIDE_ENROLMENT_TOKEN" not in ep_text or "identity.json" not in ep_text:
                problem(f"service {name}: no entrypoint that waits while neither a token nor an identity exists "
                        "(the agent would exit and be restarted in a loop)")
    written = {env_key(label): label for label in labels}
    for key, name in read.items():
        if key not in written:
            problem(f"service {name} reads {key}, which scripts/compose-init.sh does not write (hospitals=\"{m.group(1)}\")")
    for key, label in written.items():
        if key not in read:
            problem(f"scripts/compose-init.sh writes {key} (label {label}), which no compose service reads")
    for svc in re.findall(r"docker compose (?:exec -T|up -d --build --wait|cp) (\S+?)(?::|\s|$)", text):
        if svc not in services:
            problem(f"scripts/compose-init.sh uses compose service {svc!r}, which docker-compose.yml does not define")
    sf = re.search(r"^study_file=(\S+)", text, re.M)
    if not sf:
        problem("scripts/compose-init.sh: no study_file=... line")
        return
    study_path = base / sf.group(1)
    try:
        study = tomllib.loads(study_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        problem(f"{sf.group(1)}: cannot read the bundled study: {e}")
        return
    for key in ("name", "budget"):
        if key not in study:
            problem(f"{sf.group(1)}: no {key} (required by confide study create)")
    model = study.get("model_file")
    if not model or not (study_path.parent / model).is_file():
        problem(f"{sf.group(1)}: model_file {model!r} does not exist relative to the study file")
    if (study.get("schedule") or {}).get("kind") != "automatic":
        problem(f"{sf.group(1)}: [schedule] kind is not \"automatic\" (the stack would not train without further steps)")
    if study.get("min_participants", 3) > len(labels):
        problem(f"{sf.group(1)}: min_participants {study.get('min_participants')} > the {len(labels)} hospitals")


def main() -> int:
    compose_path = ROOT / "docker-compose.yml"
    compose = check_compose(compose_path)
    if compose:
        check_prometheus(compose, ROOT)
        uid = check_grafana(compose, ROOT)
        check_dashboards(ROOT / "dashboards" / "grafana", uid)
        check_deploy(compose, ROOT)
        check_init(compose, ROOT)
    for n in notes:
        print(f"  {n}")
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    print(f"check_compose: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
