"""Prompt-tuning train step vs model tuning at the same encoder length (and vs HF PEFT).

Why: the point of prompt tuning on a frozen model is a cheaper step. This times the full
jitted train step exactly as training.py runs it (`step.jit_train_step`, state donated,
frozen weights a separate argument, Adafactor from `optim.make_optimizer`), for
  prompt: PromptConfig(length=P) on `input_len` tokens, optim.PROMPT_TUNING
  model:   no prompt, `input_len + P` tokens (the same encoder length), optim.MODEL_TUNING
each in its own subprocess so peak RSS (ru_maxrss) is per mode. `--with_peft` also runs
the peer, ../shared/benchmarks/peft_baseline.py (Hugging Face PEFT prompt tuning in
torch), with matching settings and puts it in the same table.

Targets (issue 3): prompt step <= 0.5x PEFT's and <= 0.7x model tuning's step time;
prompt peak RSS <= 0.5x PEFT's.

  python benchmarks/prompt_step.py --steps 3 --warmup 1
  python benchmarks/prompt_step.py --with_peft --peft_steps 3 --peft_warmup 1

The PEFT peer runs the whole batch at once (it has no microbatching), so `--with_peft`
refuses `--num_microbatches` > 1: microbatches cut our activation memory, and a peak-RSS
ratio between 4 microbatches and 1 measures the setting, not the library.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple

import common
from common import fmt, format_table, loadavg

DEFAULT_PEFT = os.path.join(common.REPO_ROOT, "..", "shared", "benchmarks", "peft_baseline.py")
MODES = ("prompt", "model")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--modes", default="prompt,model", help=f"comma list of {MODES}")
  p.add_argument("--size", default="small", help="config.SIZES key")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--input_len", type=int, default=128, help="input tokens; the prompt is added on top")
  p.add_argument("--prompt_len", type=int, default=100)
  p.add_argument("--target_len", type=int, default=8)
  p.add_argument("--steps", type=int, default=3, help="timed steps after warm-up")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", default="float32", help="T5Config.dtype (activations); params stay float32")
  p.add_argument("--num_microbatches", type=int, default=1,
                 help="LossConfig.num_microbatches (XLA counts a scan body once: FLOPs shown per microbatch)")
  p.add_argument("--ceiling_gflops", type=float, default=None,
                 help="matmul ceiling (wall GFLOP/s); measured with matmul_ceiling.py when omitted")
  p.add_argument("--with_peft", action="store_true", help="also run the PEFT peer with matching settings")
  p.add_argument("--peft_script", default=DEFAULT_PEFT)
  p.add_argument("--peft_modes", default="peft", help="peer modes: peft and/or full")
  p.add_argument("--peft_steps", type=int, default=3)
  p.add_argument("--peft_warmup", type=int, default=1)
  p.add_argument("--peft_threads", type=int, default=os.cpu_count() or 2)
  p.add_argument("--json_out", default=None, help="write all results here")
  p.add_argument(common.SINGLE_FLAG, dest="single", default=None, help=argparse.SUPPRESS)
  return p


class Setup(NamedTuple):
  cfg: Any  # T5Config
  compiled: Any  # the compiled train step
  compile_s: float
  state: Any  # step.TrainState
  frozen: Any
  batch: dict
  encoder_len: int  # input tokens + prompt rows


def _setup(args: argparse.Namespace, mode: str) -> Setup:
  """One mode's model, params, optimizer and compiled step, built as training.py builds them."""
  import jax
  import jax.numpy as jnp

  from prompt_tuning_jax.checkpoints import backbone
  from prompt_tuning_jax.model.config import SIZES
  from prompt_tuning_jax.prompt import initializers, wrapper
  from prompt_tuning_jax.trainer import optim, step
  if args.size not in SIZES:
    raise ValueError(f"--size={args.size!r}; expected one of {sorted(SIZES)}")
  cfg = SIZES[args.size].replace(dtype=args.dtype)
  frozen, _ = backbone.load_frozen(f"random:{args.seed}", cfg)
  if mode == "prompt":
    prompt_cfg, optim_cfg = wrapper.PromptConfig(length=args.prompt_len), optim.PROMPT_TUNING
    input_len, encoder_len = args.input_len, args.input_len + args.prompt_len
    value = initializers.uniform_symmetric(0.5)(jax.random.PRNGKey(args.seed), prompt_cfg.shape(cfg.emb_dim),
                                           frozen["token_embedder"]["embedding"])
    full = wrapper.set_prompt(frozen, jnp.asarray(value, jnp.float32))
  else:  # model tuning sees the same encoder length as plain tokens
    prompt_cfg, optim_cfg = None, optim.MODEL_TUNING
    input_len = encoder_len = args.input_len + args.prompt_len
    full = frozen
  trainable, frozen = optim.split_params(full, optim_cfg.trainable_patterns)
  del full
  model = wrapper.make_model(cfg, prompt_cfg)
  optimizer = optim.make_optimizer(optim_cfg)
  state = step.init_state(trainable, optimizer, jax.random.PRNGKey(args.seed + 1))
  batch = jax.device_put(common.random_batch(cfg.vocab_size, args.batch, input_len, args.target_len, args.seed))
  t0 = time.perf_counter()
  loss_config = step.LossConfig(num_microbatches=args.num_microbatches)
  compiled = step.jit_train_step(model, optimizer, loss_config).lower(state, frozen, batch).compile()
  return Setup(cfg, compiled, time.perf_counter() - t0, state, frozen, batch, encoder_len)


def run_single(args: argparse.Namespace, mode: str) -> dict:
  """Time one mode in this process (called in a fresh subprocess by `main`)."""
  import jax
  if mode not in MODES:
    raise ValueError(f"--modes entry {mode!r}; expected one of {MODES}")
  rss_start = common.current_rss_gb()
  setup = _setup(args, mode)
  rss_setup = common.current_rss_gb()
  compiled, frozen, batch = setup.compiled, setup.frozen, setup.batch
  holder = {"state": setup.state}  # the state is donated: always call with the newest one
  setup = setup._replace(state=None)
  losses = []

  def one_step():
    holder["state"], metrics = compiled(holder["state"], frozen, batch)
    losses.append(metrics["loss"])
    return holder["state"], metrics

  load_before = loadavg()
  timing = common.time_steps(one_step, warmup=args.warmup, steps=args.steps)
  n_trainable = sum(x.size for x in jax.tree.leaves(holder["state"].params))
  analytic = common.t5_train_flops(setup.cfg, args.batch, setup.encoder_len, args.target_len, trainable=mode)
  return dict(mode=mode, encoder_len=setup.encoder_len, trainable_params=int(n_trainable),
              compile_s=round(setup.compile_s, 1), **timing.as_dict(), **common.xla_cost(compiled),
              **common.xla_memory(compiled), analytic_flops=analytic, first_loss=float(losses[0]),
              last_loss=float(losses[-1]), loadavg_before_after=[load_before, loadavg()],
              rss_start_gb=round(rss_start, 3), rss_after_setup_gb=round(rss_setup, 3),
              peak_rss_gb=round(common.peak_rss_gb(), 3))


def run_peft(args: argparse.Namespace, cfg) -> list[dict]:
  """The PEFT peer with our settings (dropout off, as LossConfig's default); rows in our units."""
  if args.size != "small":
    print(f"warning: the PEFT peer always builds the T5 1.1 Small shape; --size={args.size} rows do not compare",
          file=sys.stderr)
  if not os.path.isfile(args.peft_script):
    raise SystemExit(f"--peft_script={args.peft_script} does not exist (expected the PEFT peer benchmark)")
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "peft.json")
    cmd = [sys.executable, args.peft_script, "--modes", args.peft_modes, "--steps", str(args.peft_steps),
           "--warmup", str(args.peft_warmup), "--batch", str(args.batch), "--input-len", str(args.input_len),
           "--target-len", str(args.target_len), "--num-virtual-tokens", str(args.prompt_len),
           "--threads", str(args.peft_threads), "--seed", str(args.seed), "--no-dropout", "--json-out", out]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      sys.stderr.write(proc.stderr[-5000:])
      raise SystemExit(f"PEFT peer failed (rc={proc.returncode}): {' '.join(cmd)}")
    with open(out) as f:
      report = json.load(f)
  rows = []
  for r in report["results"]:
    rows.append(dict(mode=f"PEFT {r['mode']} (torch)", encoder_len=r["encoder_len"],
                     trainable_params=r["trainable_params"], median_step_s=r["median_step_s"],
                     median_step_cpu_s=r["median_step_cpu_s"], step_times_s=r["step_times_s"],
                     peak_rss_gb=round(r["peak_rss_mb"] * 2**20 / 1e9, 3), flops=float("nan"),
                     analytic_flops=common.t5_train_flops(cfg, args.batch, r["encoder_len"], args.target_len,
                                                          trainable="prompt" if r["mode"] == "peft" else "model"),
                     loadavg_before_after=r["loadavg_1m_before_after"], peer=r))
  return rows


def _row(r: dict, ceiling: dict) -> tuple:
  step, cpu = r["median_step_s"], r["median_step_cpu_s"]
  flops = r["flops"] if r["flops"] == r["flops"] else r["analytic_flops"]  # PEFT: analytic only
  rate = flops / step / 1e9
  return (r["mode"], r["encoder_len"], f"{r['trainable_params']:,}", fmt(step, 3), fmt(cpu, 2),
          fmt(r["peak_rss_gb"], 2), fmt(r["flops"] / 1e9, 1), fmt(r["analytic_flops"] / 1e9, 1),
          fmt(rate, 1) + ("" if r["flops"] == r["flops"] else "*"), fmt(100 * rate / ceiling["gflops"], 1),
          fmt(100 * (flops / cpu / 1e9) / ceiling["gflop_per_cpu_s"], 1))


def _ratios(by_mode: dict[str, dict]) -> list[tuple]:
  """prompt/PEFT and prompt/model ratios next to the issue's targets."""
  out = []
  prompt = by_mode.get("prompt")
  for other, key, what, target in (("PEFT peft (torch)", "median_step_s", "step time", 0.5),
                                   ("PEFT peft (torch)", "median_step_cpu_s", "CPU s/step", None),
                                   ("PEFT peft (torch)", "peak_rss_gb", "peak RSS", 0.5),
                                   ("model", "median_step_s", "step time", 0.7),
                                   ("model", "median_step_cpu_s", "CPU s/step", None),
                                   ("model", "peak_rss_gb", "peak RSS", None)):
    if prompt is None or other not in by_mode:
      continue
    ratio = prompt[key] / by_mode[other][key]
    verdict = "n/a" if target is None else ("met" if ratio <= target else "MISSED")
    out.append((f"prompt / {other}", what, fmt(ratio, 3), "n/a" if target is None else f"<= {target}", verdict))
  return out


def main() -> None:
  args = build_parser().parse_args()
  if args.single:
    print(json.dumps(run_single(args, args.single)), flush=True)
    return
  modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  bad = [m for m in modes if m not in MODES]
  if bad:
    raise SystemExit(f"--modes has {bad}; expected a comma list of {MODES}")
  if args.with_peft and args.num_microbatches != 1:
    raise SystemExit(f"--with_peft with --num_microbatches {args.num_microbatches}: the PEFT peer runs the whole "
                     "batch at once; compare at equal settings (--num_microbatches 1)")
  import matmul_ceiling

  from prompt_tuning_jax.model.config import SIZES
  cfg = SIZES[args.size]
  load_start = loadavg()
  ceiling = ({"gflops": args.ceiling_gflops, "gflop_per_cpu_s": float("nan")} if args.ceiling_gflops
             else matmul_ceiling.ceiling())
  argv = [a for a in sys.argv[1:] if a != "--with_peft"]
  results = []
  for mode in modes:
    r = common.run_single_mode(__file__, mode, argv)
    print(f"{mode}: steps {r['step_times_s']} compile {r['compile_s']} s, peak RSS {r['peak_rss_gb']} GB, "
          f"XLA temp {r.get('xla_temp_gb')} GB, loss {r['first_loss']:.3f} -> {r['last_loss']:.3f}", flush=True)
    results.append(r)
  if args.with_peft:
    results += run_peft(args, cfg)
  print(f"\nT5 1.1 {args.size} shape, {args.dtype} activations (float32 params), random weights, "
        f"batch {args.batch}, inputs {args.input_len} + {args.prompt_len} prompt (model tuning: "
        f"{args.input_len + args.prompt_len} inputs), targets {args.target_len}, Adafactor, dropout off; "
        f"ours {args.warmup}+{args.steps} steps, PEFT {args.peft_warmup}+{args.peft_steps}; median; "
        f"loadavg start {load_start} end {loadavg()}")
  print(f"matmul ceiling: {ceiling['gflops']:.1f} GFLOP/s wall, {ceiling['gflop_per_cpu_s']:.1f} GFLOP per CPU-s")
  print(format_table(["mode", "enc len", "trainable", "step (s)", "CPU s/step", "peak RSS (GB)",
                      "GFLOP/step (XLA)", "GFLOP/step (analytic)", "GFLOP/s", "% ceiling (wall)",
                      "% ceiling (CPU-s)"], [_row(r, ceiling) for r in results]))
  print("GFLOP/s uses XLA's count; * = analytic count (the torch peer has no XLA cost analysis). "
        "GB = 1e9 bytes (ru_maxrss of each mode's own process).")
  ratios = _ratios({r["mode"]: r for r in results})
  if ratios:
    print(format_table(["ratio", "of", "value", "target", "verdict"], ratios))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump({"args": vars(args), "ceiling": ceiling, "results": results}, f, indent=2)


if __name__ == "__main__":
  main()
