"""Timing helpers shared by the benchmark scripts (they print tables; nothing asserts).

Why a module: every script times steps the same way (warm-up, then N timed steps each
ended by `block_until_ready`, median wall and CPU seconds), reads XLA's FLOP count from
the compiled executable, and measures peak RSS in a fresh subprocess per mode, so the
peaks are per mode and not the max over everything the parent ever held (as the PEFT
peer, ../shared/benchmarks/peft_baseline.py, does).
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # the package is not installed; benchmarks run from a checkout
  sys.path.insert(0, REPO_ROOT)

SINGLE_FLAG = "--_single"  # internal: run one mode in this process and print its JSON


@dataclasses.dataclass
class Timing:
  """Per-step wall and CPU seconds of the timed steps (warm-up excluded)."""
  wall_s: list[float]
  cpu_s: list[float]

  @property
  def median_s(self) -> float:
    return statistics.median(self.wall_s)

  @property
  def median_cpu_s(self) -> float:
    return statistics.median(self.cpu_s)

  def as_dict(self) -> dict[str, Any]:
    return {"step_times_s": [round(t, 4) for t in self.wall_s], "median_step_s": round(self.median_s, 4),
            "min_step_s": round(min(self.wall_s), 4), "max_step_s": round(max(self.wall_s), 4),
            "median_step_cpu_s": round(self.median_cpu_s, 4),
            "cpu_over_wall": round(self.median_cpu_s / self.median_s, 3)}


def block(tree: Any) -> Any:
  import jax
  return jax.block_until_ready(tree)


def time_steps(step: Callable[[], Any], *, warmup: int, steps: int) -> Timing:
  """Call `step()` warmup + steps times; each call's result is blocked on before the clock stops.

  `step` may carry state between calls (e.g. a closure that rebinds a donated train state).
  """
  if steps < 1 or warmup < 0:
    raise ValueError(f"time_steps needs steps >= 1 and warmup >= 0, got steps={steps} warmup={warmup}")
  wall, cpu = [], []
  for i in range(warmup + steps):
    c0, t0 = time.process_time(), time.perf_counter()
    block(step())
    t1, c1 = time.perf_counter(), time.process_time()
    if i >= warmup:
      wall.append(t1 - t0)
      cpu.append(c1 - c0)
  return Timing(wall, cpu)


def peak_rss_gb() -> float:
  """This process's peak resident set (ru_maxrss is KiB on Linux), in GB (1e9 bytes)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def current_rss_gb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024 / 1e9
  return float("nan")


def xla_cost(compiled: Any) -> dict[str, float]:
  """FLOPs and bytes accessed from XLA's cost analysis of a compiled executable."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per partition
    cost = cost[0]
  return {"flops": float(cost.get("flops", float("nan"))),
          "bytes_accessed": float(cost.get("bytes accessed", float("nan")))}


def xla_memory(compiled: Any) -> dict[str, float]:
  """Argument/output/temp buffer sizes (GB) XLA planned for the executable."""
  stats = compiled.memory_analysis()
  if stats is None:
    return {}
  gb = lambda n: round(n / 1e9, 3)
  return {"xla_argument_gb": gb(stats.argument_size_in_bytes), "xla_output_gb": gb(stats.output_size_in_bytes),
          "xla_alias_gb": gb(stats.alias_size_in_bytes), "xla_temp_gb": gb(stats.temp_size_in_bytes)}


def matmul_rate(m: int, k: int, n: int, *, reps: int = 5, warmup: int = 2) -> dict[str, float]:
  """float32 [m, k] @ [k, n] throughput: best-of-`reps` wall GFLOP/s, and GFLOP per CPU
  second (summed over threads), which is less sensitive to other work on a shared box."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.PRNGKey(0), (m, k), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (k, n), jnp.float32)
  f = jax.jit(jnp.matmul).lower(a, b).compile()
  timing = time_steps(lambda: f(a, b), warmup=warmup, steps=reps)
  flops = 2.0 * m * k * n
  return {"gflops": flops / min(timing.wall_s) / 1e9, "gflop_per_cpu_s": flops / min(timing.cpu_s) / 1e9}


def loadavg() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


def run_single_mode(script: str, mode: str, argv: Sequence[str]) -> dict[str, Any]:
  """Run `script argv --_single mode` in a fresh interpreter; its last stdout line is JSON."""
  cmd = [sys.executable, os.path.abspath(script), *argv, SINGLE_FLAG, mode]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    sys.stderr.write(proc.stderr[-5000:])
    raise SystemExit(f"{os.path.basename(script)}: mode {mode!r} failed (rc={proc.returncode}); "
                     f"command: {' '.join(cmd)}")
  lines = [l for l in proc.stdout.strip().splitlines() if l.startswith("{")]
  if not lines:
    raise SystemExit(f"{os.path.basename(script)}: mode {mode!r} printed no JSON result; stdout tail:\n"
                     f"{proc.stdout[-2000:]}")
  return json.loads(lines[-1])


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A Markdown table; floats keep the precision the caller formatted them with."""
  cells = [[str(c) for c in row] for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
  line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(headers), sep] + [line(r) for r in cells])


def fmt(x: float | None, digits: int = 2) -> str:
  if x is None or x != x:  # None or NaN
    return "n/a"
  return f"{x:.{digits}f}"


def t5_forward_flops(cfg: Any, batch: int, enc_len: int, dec_len: int) -> dict[str, float]:
  """Analytic forward FLOPs of a T5 encoder-decoder (2 FLOPs per multiply-add, matmuls only).

  'dense': every kernel at the tokens it is applied to (cross-attention key/value
  projections run on the encoder tokens) plus the output projection; 'attention': the
  score and mix products (2 * 2 * B * H * q * k * d_head per layer). Embedding gathers,
  norms, softmax and activations are left out.
  """
  d, h, k, f = cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim
  proj = d * h * k  # one q/k/v/out kernel
  mlp = len(cfg.mlp_activations) * d * f + f * d
  enc_tok, dec_tok = batch * enc_len, batch * dec_len
  attn = lambda q, kv: 4.0 * batch * h * q * kv * k
  dense = (cfg.num_encoder_layers * 2.0 * (4 * proj + mlp) * enc_tok
           + cfg.num_decoder_layers * 2.0 * ((6 * proj + mlp) * dec_tok  # self q,k,v,o; cross q,o; mlp
                                             + 2 * proj * enc_tok)  # cross k, v on the encoder output
           + 2.0 * d * cfg.vocab_size * dec_tok)  # logits_dense
  attention = (cfg.num_encoder_layers * attn(enc_len, enc_len)
               + cfg.num_decoder_layers * (attn(dec_len, dec_len) + attn(dec_len, enc_len)))
  return {"dense": dense, "attention": attention, "total": dense + attention}


def t5_train_flops(cfg: Any, batch: int, enc_len: int, dec_len: int, *, trainable: str) -> float:
  """Analytic forward + backward FLOPs; trainable is 'model' (all weights) or 'prompt'.

  Backward of a dense layer is one matmul for the input gradient plus one for the weight
  gradient; with only the prompt trainable XLA needs just the input gradients (the
  prompt sits below every layer), so dense layers cost 2x their forward instead of 3x
  (the '6 * N * tokens' rule vs '4 * N * tokens'). Attention products have no weights:
  their backward is 2x their forward either way.
  """
  if trainable not in ("model", "prompt"):
    raise ValueError(f"t5_train_flops: trainable must be 'model' or 'prompt', got {trainable!r}")
  fwd = t5_forward_flops(cfg, batch, enc_len, dec_len)
  dense_mult = 3.0 if trainable == "model" else 2.0
  return dense_mult * fwd["dense"] + 3.0 * fwd["attention"]


def random_batch(vocab_size: int, batch: int, input_len: int, target_len: int, seed: int = 0) -> dict:
  """Random full-length token features [B, L] / [B, T] int32 with T5X's feature names.

  Same layout as `prompt_tuning_jax.text.data.encdec_features` (decoder inputs are the targets
  shifted right), written here because importing data.py pulls in TensorFlow (~0.7 GB of
  RSS), which would swamp the per-mode peak-RSS numbers.
  """
  import numpy as np
  rng = np.random.default_rng(seed)
  inputs = rng.integers(2, vocab_size, (batch, input_len), dtype=np.int32)
  targets = rng.integers(2, vocab_size, (batch, target_len), dtype=np.int32)
  decoder_inputs = np.zeros_like(targets)
  decoder_inputs[:, 1:] = targets[:, :-1]
  return {"encoder_input_tokens": inputs, "decoder_input_tokens": decoder_inputs,
          "decoder_target_tokens": targets, "decoder_loss_weights": np.ones_like(targets)}
