"""Import time and `--help` wall time of every command, each in a fresh subprocess.

Why: a gin typo or `--help` should come back in seconds, so importing a command must not
pull in jax, TensorFlow or SeqIO (commands import their library after parsing flags). This prints, per
command, the median over `--runs` fresh interpreters of (a) the seconds `import
prompt_tuning_jax.<cmd>` takes inside the interpreter, (b) whether jax / TensorFlow / SeqIO
ended up in `sys.modules`, and (c) the wall seconds of `python -m prompt_tuning_jax.<cmd>
--help`, interpreter start-up included, and its CPU seconds (the number to compare on a
shared, loaded machine). `--tree PATH` measures another checkout instead
(put first on PYTHONPATH; `--python` picks the interpreter, e.g. the system `python3`).
Never asserts: numbers depend on the machine's load, printed before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = ("train", "eval", "infer", "score", "export", "convert", "plan", "reproduce", "demo", "inspect_prompt")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = """
import json, sys, time
t = time.perf_counter()
import prompt_tuning_jax.{cmd}
dt = time.perf_counter() - t
print(json.dumps({{"s": dt, "jax": "jax" in sys.modules, "tf": "tensorflow" in sys.modules,
                  "seqio": "seqio" in sys.modules}}))
"""


def _env(tree: str) -> dict[str, str]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH", "")) if p)
  return env


def import_time(python: str, tree: str, cmd: str) -> dict:
  """One fresh interpreter: seconds to import the command module, and what it pulled in."""
  proc = subprocess.run([python, "-c", _PROBE.format(cmd=cmd)], env=_env(tree), cwd=tree,
                        capture_output=True, text=True, timeout=600)
  if proc.returncode:
    return {"error": proc.stderr.strip().splitlines()[-1:] or ["?"]}
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _children_cpu_s() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def help_time(python: str, tree: str, cmd: str) -> tuple[float, float, int]:
  """Wall seconds, CPU seconds (user + system: what load on a shared machine does not
  inflate) and exit status of `python -m prompt_tuning_jax.<cmd> --help`."""
  t, cpu = time.perf_counter(), _children_cpu_s()
  proc = subprocess.run([python, "-m", f"prompt_tuning_jax.{cmd}", "--help"], env=_env(tree), cwd=tree,
                        capture_output=True, text=True, timeout=600)
  return time.perf_counter() - t, _children_cpu_s() - cpu, proc.returncode


def measure(python: str, tree: str, cmd: str, runs: int) -> dict:
  imports = [import_time(python, tree, cmd) for _ in range(runs)]
  helps = [help_time(python, tree, cmd) for _ in range(runs)]
  ok = [r for r in imports if "error" in r] == []
  return {"cmd": cmd,
          "import_s": statistics.median(r["s"] for r in imports) if ok else None,
          "import_error": None if ok else imports[0]["error"][0],
          "jax": ok and imports[0]["jax"], "tf": ok and imports[0]["tf"], "seqio": ok and imports[0]["seqio"],
          "help_s": statistics.median(h[0] for h in helps), "help_cpu_s": statistics.median(h[1] for h in helps),
          "help_rc": max(h[2] for h in helps)}


def print_table(rows: list[dict], runs: int) -> None:
  print(f"| command | import s (median of {runs}) | jax / tensorflow / seqio imported | `--help` wall s "
        "| `--help` CPU s | `--help` exit |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    imp = f"{r['import_s']:.2f}" if r["import_s"] is not None else f"failed: {r['import_error']}"
    yes = lambda key: "yes" if r.get(key) else "no"
    print(f"| {r['cmd']} | {imp} | {yes('jax')} / {yes('tf')} / {yes('seqio')} "
          f"| {r['help_s']:.2f} | {r['help_cpu_s']:.2f} | {r['help_rc']} |")


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tree", default=REPO_ROOT, help="checkout to measure (default: this one)")
  parser.add_argument("--python", default=sys.executable, help="interpreter to run (default: this one)")
  parser.add_argument("--runs", type=int, default=3, help="fresh interpreters per measurement (median)")
  parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated subset")
  parser.add_argument("--json_out", default="", help="also write the rows as JSON here")
  args = parser.parse_args(argv)
  tree = os.path.abspath(args.tree)
  print(f"tree {tree}, python {args.python}, load average {os.getloadavg()[0]:.2f}")
  rows = [measure(args.python, tree, cmd, args.runs) for cmd in args.commands.split(",")]
  print_table(rows, args.runs)
  print(f"load average after: {os.getloadavg()[0]:.2f}")
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
