"""Run every fuzz case of tests/fuzz/ and print the table: tried / refused by name /
loaded correctly / other (must be 0), with each 'other' case spelled out.

  python scripts/fuzz_report.py
"""
from __future__ import annotations

import collections
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

import cases  # noqa: E402
import cases_data  # noqa: E402,F401  (registers its cases)
import cases_more  # noqa: E402,F401


def main() -> int:
  outcomes: dict[str, str] = {}
  with tempfile.TemporaryDirectory(prefix="fuzz_report_") as work:
    for i, name in enumerate(sorted(cases.CASES)):
      outcomes[name] = cases.run_case(name, pathlib.Path(work) / f"case_{i}")
  groups = collections.Counter(o if o in ("refused", "loaded") else "other" for o in outcomes.values())
  families = collections.Counter(name.split(":")[0].split()[0] for name in outcomes)
  print("| cases tried | refused by name | loaded correctly | other |")
  print("|---|---|---|---|")
  print(f"| {len(outcomes)} | {groups['refused']} | {groups['loaded']} | {groups['other']} |")
  print("by family: " + ", ".join(f"{k} {v}" for k, v in sorted(families.items())))
  for name, outcome in outcomes.items():
    if outcome not in ("refused", "loaded"):
      print(f"OTHER {name}: {outcome}")
  return 0 if groups["other"] == 0 else 1


if __name__ == "__main__":
  sys.exit(main())
