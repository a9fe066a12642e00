#!/usr/bin/env python3
"""SELF-TEST FIXTURE of scripts/check-dashboards.sh — not the real check, and not a coordinator.

Serves /metrics in the Prometheus text format with the coordinator's metric names, evolving over time the way a
coordinator running rounds would (two studies, three hospitals, completed and aborted rounds, dropouts, stage and HTTP
histograms), plus /healthz. scripts/ops/selftest-check-dashboards.sh points the checker at it to show the checker
passes on a realistic exposition and fails on broken expressions. The real check runs against a real coordinator.

    scripts/ops/selftest_exporter.py --port 9464 [--round-seconds 2]
"""
import argparse
import http.server
import math
import threading
import time

# Labels as coordinator/src/metrics.rs and its callers set them: numeric study and participant ids, the wire names of
# the round stages, outcomes completed/aborted, HTTP route (axum's matched path) and status.
STUDIES = {  # study id -> (participant ids, ε budget each, rounds start offset in seconds)
    "1": (["1", "2", "3"], 1.0, 0.0),
    "2": (["4", "5"], 2.0, 0.7),
}
STAGES = ["advertise_keys", "share_keys", "masked_input_collection", "unmasking"]
STAGE_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]
HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]  # the prometheus crate's defaults
ROUTES = [("/v1/participant/rounds/{round_id}/messages/{stage}", 200), ("/v1/participant/task", 200), ("/v1/participant/task", 204),
          ("/v1/participant/models/{version}", 200), ("/v1/studies/{study_id}/rounds", 201),
          ("/v1/participant/rounds/{round_id}/messages/{stage}", 409), ("/v1/studies/{study_id}/privacy", 200), ("/healthz", 200),
          ("/v1/participant/rounds/{round_id}/messages/{stage}", 413), ("/metrics", 200)]


def labels(**kv):
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(kv.items())) + "}"


class Simulation:
    def __init__(self, round_seconds: float):
        self.t0 = time.time()
        self.round_seconds = round_seconds

    def exposition(self) -> str:
        elapsed = time.time() - self.t0
        spent, rounds, dropouts, participants, accuracy = {}, {}, {}, {}, {}
        stage_obs = {s: [] for s in STAGES}
        for study, (members, _budget, offset) in STUDIES.items():
            done = max(0, math.floor((elapsed - offset) / self.round_seconds))
            for o in ("completed", "aborted"):
                rounds[(study, o)] = 0
            for s in STAGES:
                dropouts[(study, s)] = 0  # emitted only once non-zero, as the coordinator does
            for p in members:
                spent[(study, p)] = 0.0
            for k in range(1, done + 1):
                aborted = k % 5 == 0
                dropped = members[-1] if k % 3 == 0 else None  # drops after share keys: no spend for it this round
                sets = {"selected": len(members), **{s: len(members) for s in STAGES}}
                if dropped:
                    dropouts[(study, "masked_input_collection")] += 1
                    for s in STAGES[2:]:
                        sets[s] -= 1
                if aborted:
                    dropouts[(study, "unmasking")] += len(members) - 1
                    sets["unmasking"] = 1
                rounds[(study, "aborted" if aborted else "completed")] += 1
                if not aborted:
                    for p in members:
                        if p != dropped:
                            spent[(study, p)] += 0.035 * (1 + 0.2 * members.index(p))
                    # The federated evaluation of the round's model: noisy accuracy rising towards 0.95.
                    accuracy[study] = (0.95 - 0.4 / k + 0.02 * ((k % 3) - 1), 0.2 + 0.5 / k)
                for i, s in enumerate(STAGES):
                    stage_obs[s].append(0.08 * (i + 1) * (1 + (k % 4) / 4))
                participants[study] = sets
        out = []

        def metric(name, kind, help_text):
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}")

        metric("confide_privacy_epsilon_spent", "gauge", "Privacy loss epsilon spent by a participant in a study (PLD accountant).")
        for (study, p), v in sorted(spent.items()):
            out.append(f"confide_privacy_epsilon_spent{labels(participant=p, study=study)} {v:.6f}")
        metric("confide_model_accuracy", "gauge", "Accuracy of a study's latest evaluated model (federated, DP noise).")
        for study, (acc, _loss) in sorted(accuracy.items()):  # emitted once a model was evaluated, as the coordinator does
            out.append(f"confide_model_accuracy{labels(study=study)} {acc:.6f}")
        metric("confide_model_loss", "gauge", "Mean clamped loss of a study's latest evaluated model (federated, DP noise).")
        for study, (_acc, loss) in sorted(accuracy.items()):
            out.append(f"confide_model_loss{labels(study=study)} {loss:.6f}")
        metric("confide_privacy_epsilon_budget", "gauge", "Privacy budget epsilon of a participant in a study.")
        for study, (members, budget, _o) in STUDIES.items():
            for p in members:
                out.append(f"confide_privacy_epsilon_budget{labels(participant=p, study=study)} {budget}")
        metric("confide_rounds_total", "counter", "Rounds that ended, by outcome.")
        for (study, o), v in sorted(rounds.items()):
            out.append(f"confide_rounds_total{labels(outcome=o, study=study)} {v}")
        metric("confide_round_participants", "gauge", "Participants in each stage's set of the current round.")
        for study, sets in sorted(participants.items()):
            for s, v in sets.items():
                out.append(f"confide_round_participants{labels(stage=s, study=study)} {v}")
        metric("confide_participant_dropouts_total", "counter", "Participants that dropped out, by the stage they dropped at.")
        for (study, s), v in sorted(dropouts.items()):
            if v:
                out.append(f"confide_participant_dropouts_total{labels(stage=s, study=study)} {v}")
        metric("confide_round_stage_duration_seconds", "histogram", "Duration of a round stage.")
        for s in STAGES:
            self.histogram(out, "confide_round_stage_duration_seconds", {"stage": s}, STAGE_BUCKETS, stage_obs[s])
        n = int(elapsed * 4)
        metric("confide_http_requests_total", "counter", "HTTP requests by route and status.")
        http_obs = {}
        for i, (route, status) in enumerate(ROUTES):
            count = n // (i + 1) if status < 400 else n // 40
            http_obs[(route, status)] = count
            out.append(f"confide_http_requests_total{labels(route=route, status=status)} {count}")
        metric("confide_http_request_duration_seconds", "histogram", "HTTP request latency by route and status.")
        for (route, status), count in http_obs.items():
            base = 25.0 if route.endswith("/task") and status == 204 else 0.004 * (1 + len(route) % 5)
            obs = [base * (1 + (j % 7) / 10) for j in range(count)]
            self.histogram(out, "confide_http_request_duration_seconds", {"route": route, "status": status}, HTTP_BUCKETS, obs)
        return "\n".join(out) + "\n"

    @staticmethod
    def histogram(out, name, lbl, buckets, obs):
        for le in buckets:
            out.append(f"{name}_bucket{labels(**lbl, le=le)} {sum(1 for o in obs if o <= le)}")
        out.append(f"{name}_bucket{labels(**lbl, le='+Inf')} {len(obs)}")
        out.append(f"{name}_sum{labels(**lbl)} {sum(obs):.6f}")
        out.append(f"{name}_count{labels(**lbl)} {len(obs)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--round-seconds", type=float, default=2.0)
    args = ap.parse_args()
    sim = Simulation(args.round_seconds)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                with lock:
                    body = sim.exposition().encode()
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            elif self.path == "/healthz":
                body, ctype = b"ok\n", "text/plain"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
