#!/usr/bin/env python3
"""Splits data/breast_cancer_wisconsin.csv into one training slice per compose participant, plus the study's
standardisation statistics.

Each hospital of docker-compose.yml mounts deploy/participants/<name>/ (its participant.toml, data.csv and
standardization.json) read-only. A federated model needs one input scale for every site, fixed in advance: the
statistics come from a reference part of the data (15 %) that no hospital holds, standing in for the public reference
data a real study would publish; statistics of a hospital's own records would not be covered by its DP guarantee.
The split is deterministic (seeded shuffle, then contiguous parts), so the committed files can be re-checked:
`deploy/make-slices.py --check` exits 1 if a committed file differs from what this script makes.
"""
import json
import math
import argparse
import io
import pathlib
import random
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "breast_cancer_wisconsin.csv"
PARTICIPANTS = ["hospital-a", "hospital-b", "hospital-c"]
SEED = 20261125
LABEL = "malignant"
REFERENCE_FRACTION = 0.15


def standardization(header: str, rows: list[str]) -> str:
    """Mean and population standard deviation per feature (constant features get 1), in the JSON that the agent's
    `stats` option reads (the same definition as `Standardization::compute`)."""
    names = header.split(",")
    features = [i for i, n in enumerate(names) if n != LABEL]
    values = [[float(r.split(",")[i]) for r in rows] for i in features]
    mean = [sum(v) / len(v) for v in values]
    std = []
    for v, m in zip(values, mean):
        s = math.sqrt(sum((x - m) ** 2 for x in v) / len(v))
        std.append(s if s > 1e-12 else 1.0)
    doc = {"feature_names": [names[i] for i in features], "mean": mean, "std": std}
    return json.dumps(doc, indent=2) + "\n"


def slices() -> dict[str, str]:
    """Relative path under deploy/participants -> file content."""
    header, *rows = SOURCE.read_text(encoding="utf-8").splitlines()
    random.Random(SEED).shuffle(rows)
    n_ref = round(len(rows) * REFERENCE_FRACTION)
    reference, rows = rows[:n_ref], rows[n_ref:]
    stats = standardization(header, reference)
    out = {}
    for i, name in enumerate(PARTICIPANTS):
        part = rows[i * len(rows) // len(PARTICIPANTS):(i + 1) * len(rows) // len(PARTICIPANTS)]
        buf = io.StringIO()
        buf.write(header + "\n")
        buf.writelines(r + "\n" for r in part)
        out[f"{name}/data.csv"] = buf.getvalue()
        out[f"{name}/standardization.json"] = stats
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed slices instead of writing them")
    args = ap.parse_args()
    stale = []
    for name, text in slices().items():
        path = ROOT / "deploy" / "participants" / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
    if stale:
        print("stale or missing files (run deploy/make-slices.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
