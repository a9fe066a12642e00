#!/usr/bin/env python3
"""Splits data/breast_cancer_wisconsin.csv into one training slice per compose participant.

Each hospital of docker-compose.yml mounts deploy/participants/<name>/ (its participant.toml and data.csv) read-only.
The split is deterministic (seeded shuffle, then contiguous equal parts), so the committed slices can be re-checked:
`deploy/make-slices.py --check` exits 1 if a committed slice differs from what this script makes.
"""
import argparse
import io
import pathlib
import random
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "breast_cancer_wisconsin.csv"
PARTICIPANTS = ["hospital-a", "hospital-b", "hospital-c"]
SEED = 20261125


def slices() -> dict[str, str]:
    header, *rows = SOURCE.read_text(encoding="utf-8").splitlines()
    random.Random(SEED).shuffle(rows)
    out = {}
    for i, name in enumerate(PARTICIPANTS):
        part = rows[i * len(rows) // len(PARTICIPANTS):(i + 1) * len(rows) // len(PARTICIPANTS)]
        buf = io.StringIO()
        buf.write(header + "\n")
        buf.writelines(r + "\n" for r in part)
        out[name] = buf.getvalue()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with the committed slices instead of writing them")
    args = ap.parse_args()
    stale = []
    for name, text in slices().items():
        path = ROOT / "deploy" / "participants" / name / "data.csv"
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: {text.count(chr(10)) - 1} rows")
    if stale:
        print("stale or missing slices (run deploy/make-slices.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
