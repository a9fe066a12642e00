#!/usr/bin/env python3
"""Reference ε values from Google's dp_accounting (PyPI `dp-accounting`) for Confide's accountant tests.

Usage:  python3 -m venv /tmp/dpvenv && /tmp/dpvenv/bin/pip install dp-accounting
        /tmp/dpvenv/bin/python generate.py > reference.json

Grid: q in {0.001, 0.01, 0.1, 1}, sigma in {0.5, 1, 2, 4}, T in {1, 10, 100, 1000, 10000}, delta in {1e-5, 1e-6}.
PLD: PLDAccountant(value_discretization_interval=1e-4) (ADD_OR_REMOVE_ONE, connect-the-dots, pessimistic).
     For q = 1 the event is SelfComposed(Gaussian(sigma), T), which dp_accounting turns into one Gaussian with
     sigma/sqrt(T) -- the same event, computed without T FFT compositions.
RDP: RdpAccountant with its default orders (recorded in the output).
Exact: analytic Gaussian (Balle & Wang 2018) for q = 1, from dp_accounting's GaussianPrivacyLoss-free formula
     computed here with scipy in log space and bisection.
Cases whose PLD takes longer than PLD_TIME_LIMIT seconds are recorded with "pld": null and a reason.
"""
import json
import math
import multiprocessing as mp
import sys
import time

import dp_accounting
import numpy as np
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special

QS = [0.001, 0.01, 0.1, 1.0]
SIGMAS = [0.5, 1.0, 2.0, 4.0]
STEPS = [1, 10, 100, 1000, 10000]
DELTAS = [1e-5, 1e-6]
PLD_INTERVAL = 1e-4
PLD_TIME_LIMIT = 600.0
# dp_accounting discretises a q = 1 Gaussian with sigma_eff = sigma/sqrt(T) on one dense grid of about
# (2*sigma_eff*9.75 + 1)/sigma_eff^2 / 1e-4 points (8 bytes each, several copies); above this many points it needs
# tens of GB, so such cases are skipped (their exact and RDP values are still recorded).
PLD_MAX_GRID_POINTS = 6e7


def event(q, sigma, steps):
    if q == 1.0:
        return dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(sigma), steps)
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma)), steps)


def pld_epsilons(args):
    q, sigma, steps = args
    start = time.time()
    acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_INTERVAL)
    acc.compose(event(q, sigma, steps))
    eps = [acc.get_epsilon(d) for d in DELTAS]
    return eps, time.time() - start


def rdp_epsilons(q, sigma, steps):
    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(event(q, sigma, steps))
    return [acc.get_epsilon(d) for d in DELTAS], list(map(float, acc.orders))


def log_ndtr(x):
    return float(special.log_ndtr(x))


def exact_gaussian_delta(mu, eps):
    # Balle & Wang 2018, Theorem 8, with mu = sensitivity / sigma (composed: mu = sqrt(T) / sigma).
    a = math.exp(log_ndtr(mu / 2 - eps / mu))
    b = math.exp(eps + log_ndtr(-mu / 2 - eps / mu))
    return a - b


def exact_gaussian_epsilon(mu, delta):
    if exact_gaussian_delta(mu, 0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while exact_gaussian_delta(mu, hi) > delta:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if exact_gaussian_delta(mu, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def main():
    cases = [(q, s, t) for q in QS for s in SIGMAS for t in STEPS]
    out = []
    with mp.Pool(1) as pool:
        for (q, s, t) in cases:
            sigma_eff = s / math.sqrt(t)
            grid = (2 * sigma_eff * 9.75 + 1) / sigma_eff**2 / PLD_INTERVAL
            pld, secs, reason = None, None, None
            if q == 1.0 and grid > PLD_MAX_GRID_POINTS:
                reason = f"dp_accounting PLD would need a dense grid of {grid:.2g} points"
            else:
                res = pool.apply_async(pld_epsilons, ((q, s, t),))
                try:
                    pld, secs = res.get(timeout=PLD_TIME_LIMIT)
                except mp.TimeoutError:
                    pool.terminate()
                    pool = mp.Pool(1)
                    reason = f"dp_accounting PLD took over {PLD_TIME_LIMIT} s"
                except Exception as e:  # noqa: BLE001 - record why dp_accounting could not answer
                    reason = f"dp_accounting PLD failed: {e!r}"
            rdp, orders = rdp_epsilons(q, s, t)
            for i, d in enumerate(DELTAS):
                row = {"sampling_rate": q, "noise_multiplier": s, "steps": t, "delta": d,
                       "pld_epsilon": None if pld is None else pld[i],
                       "rdp_epsilon": rdp[i]}
                if q == 1.0:
                    row["exact_epsilon"] = exact_gaussian_epsilon(math.sqrt(t) / s, d)
                if reason:
                    row["pld_missing_reason"] = reason
                if secs is not None:
                    row["pld_seconds"] = round(secs, 3)
                out.append(row)
            print(f"q={q} sigma={s} T={t}: pld={pld} rdp={rdp} ({secs} s)", file=sys.stderr, flush=True)
    doc = {
        "generator": "common/testdata/dp_accounting/generate.py",
        "dp_accounting_version": getattr(dp_accounting, "__version__", "0.6.0"),
        "numpy_version": np.__version__,
        "pld_value_discretization_interval": PLD_INTERVAL,
        "pld_neighboring_relation": "ADD_OR_REMOVE_ONE",
        "rdp_orders": orders,
        "cases": out,
    }
    json.dump(doc, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
