"""Run every fuzz case of tests/fuzz/ and print the table: tried / refused by name /
loaded correctly / other (must be 0), with each 'other' case spelled out.

'other' is anything that is neither refused clearly (an exception whose text names the
file and the key or line, with nothing in the folder changed) nor loaded equal to the
original: loaded wrong, an unclear error, or no answer within --timeout seconds.

  python scripts/fuzz_report.py [--timeout 120] [--only SUBSTRING]

Some cases read FIFOs or /dev/zero through a symlink; a reader that does not check what
it opens hangs on the first and grows without bound on the second, so run a reader you do
not trust under a memory limit (e.g. `ulimit -v 12000000`).
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

import cases  # noqa: E402
import cases_data  # noqa: E402,F401  (registers its cases)
import cases_entries  # noqa: E402,F401
import cases_more  # noqa: E402,F401
import cases_readers  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--timeout", type=float, default=120.0, help="seconds one case may take (0: no limit)")
  parser.add_argument("--only", default="", help="run only cases whose name contains this text")
  args = parser.parse_args(argv)
  outcomes: dict[str, str] = {}
  with tempfile.TemporaryDirectory(prefix="fuzz_report_") as work:
    for i, name in enumerate(sorted(cases.CASES)):
      if args.only in name:
        outcomes[name] = cases.run_case(name, pathlib.Path(work) / f"case_{i}", timeout_s=args.timeout or None)
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
