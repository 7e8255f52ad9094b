"""Serving throughput and latency against offered load, over loopback HTTP.

  nice -n 10 python benchmarks/serve_load.py [--models demo,small] [--duration 3] [--out_dir bench_out]

For each model (the bundled demo model; T5 1.1 Small's shape with random weights, prompt
length 100), one engine is compiled once and served by four servers in turn (uvicorn in a
thread of this process, the same buckets and flags), each offered an open-loop Poisson
stream of one-pair `/v1/score` requests at increasing rates by a client in a separate
process (asyncio + httpx):

  ours, 1 prompt            --batching=mixed, every request for the same prompt
  ours, 64 prompts mixed    --batching=mixed, each request for a random one of 64 prompts
  PEFT-style, 64 prompts    --batching=per_prompt: a batch holds one prompt (how PEFT
                            serves prompt-tuning adapters: one adapter active per forward)
  one at a time, 64 prompts --batching=single: one request per forward, no batching

Every server runs a rate before any runs the next (so all see similar machine load); a server
that achieves < 80% of a rate is not offered higher ones. Bounded: `--duration` seconds per
point, a 15 s request timeout, `--rates` points per model.
Then the same four scheduler policies without HTTP (`Service.score` called in this process by
1 and by 32 closed-loop callers): the batching itself, free of the HTTP and client CPU cost
that dominates the tiny demo model on a small CPU host.

Prints Markdown tables (achieved req/s, p50/p99 latency, errors per point) and a summary
(mixed/single-prompt throughput, batched/one-at-a-time, ours/PEFT-style, p99 at the
highest load held: achieved >= 95% of offered, no errors), and saves the latency-vs-load
plot to OUT_DIR/serve_load.png. Client and server share this machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

import common  # noqa: F401  (puts the repo root on sys.path)

CLIENT_FLAG = "--_client"
WORDS = "red blue green black white pink brown gold cat dog fish bird horse cow bear apple bread milk".split()
CONFIGS = (("ours, 1 prompt", "mixed", 1), ("ours, 64 prompts mixed", "mixed", 64),
           ("PEFT-style, 64 prompts", "per_prompt", 64), ("one at a time, 64 prompts", "single", 64))
MODELS = {"demo": dict(size="demo", checkpoint=os.path.join(common.REPO_ROOT, "prompt_tuning_jax", "assets",
                                                            "demo_model", "checkpoint_1500"), prompt_length=10,
                       rates=(25, 50, 100, 200), duration=3.0,
                       closed_loop={1: 48, 32: 512}),
          "small": dict(size="small", checkpoint="random:0", prompt_length=100, rates=(2, 4, 8), duration=6.0,
                        closed_loop={1: 8, 32: 128})}


# ---------------------------------------------------------------------------- client

async def _client(url: str, rate: float, duration: float, prompts: int, seed: int) -> dict:
  import httpx  # pylint: disable=g-import-not-at-top
  rng = random.Random(seed)
  latencies, errors = [], {}
  limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
  async with httpx.AsyncClient(base_url=url, timeout=15, limits=limits) as client:
    async def one(body):
      start = time.perf_counter()
      try:
        r = await client.post("/v1/score", json=body)
        code = r.status_code
      except httpx.HTTPError as e:
        code = type(e).__name__
      if code == 200:
        latencies.append(time.perf_counter() - start)
      else:
        errors[str(code)] = errors.get(str(code), 0) + 1
      return time.perf_counter()

    t0 = time.perf_counter()
    tasks, at = [], 0.0
    while at < duration:
      delay = t0 + at - time.perf_counter()
      if delay > 0:
        await asyncio.sleep(delay)
      words = rng.sample(WORDS, 5)
      body = {"prompt": f"p{rng.randrange(prompts)}", "inputs": [" ".join(words)], "targets": [words[-1]]}
      tasks.append(asyncio.create_task(one(body)))
      at += rng.expovariate(rate)
    ends = await asyncio.gather(*tasks)
  return {"sent": len(tasks), "ok": len(latencies), "errors": errors, "latencies": latencies,
          "seconds": max(ends) - t0}


def offer(url: str, rate: float, duration: float, prompts: int, seed: int) -> dict:
  """One load point from a separate process (its own interpreter and cores)."""
  out = subprocess.run([sys.executable, __file__, CLIENT_FLAG, url, str(rate), str(duration), str(prompts), str(seed)],
                       capture_output=True, text=True, timeout=duration + 60, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- server

def build_engine(model: dict, registry_dir: str, buckets):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.evaluators import sharded  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.model.config import SIZES
  from prompt_tuning_jax.parallel import sharding
  from prompt_tuning_jax.prompt import files as prompt_files
  from prompt_tuning_jax.serving import engine, registry

  cfg = SIZES[model["size"]]
  rng = np.random.RandomState(0)
  for k in range(64):
    prompt_files.save_npy(os.path.join(registry_dir, f"p{k}.npy"),
                          rng.uniform(-0.5, 0.5, (model["prompt_length"], cfg.emb_dim)).astype(np.float32))
  prompts = registry.PromptRegistry(registry_dir, emb_dim=cfg.emb_dim, capacity=64)
  prompts.scan()
  where = sharded.start(sharding.PartitionConfig())
  frozen, _ = sharded.load_backbone(model["checkpoint"], cfg, where)
  runner = engine.Engine(cfg, frozen, prompts.bank(), where, buckets=buckets)
  start = time.perf_counter()
  runner.warm(kinds=("score",))
  return prompts, runner, time.perf_counter() - start


class Server:
  """uvicorn in a thread over one Service (this process); `stop` drains it."""

  def __init__(self, prompts, runner, policy: str, wait_ms: float):
    import uvicorn  # pylint: disable=g-import-not-at-top
    from prompt_tuning_jax.serving import app, metrics, service
    from prompt_tuning_jax.text import vocab
    limits = service.Limits(max_batch_rows=32, max_wait_ms=wait_ms, max_queue_rows=4096, request_timeout_s=15,
                            policy=policy)
    self.core = service.Service(prompts, runner, vocab.load_vocabulary(), limits, metrics.Metrics())
    self.core.start()
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    self.url = f"http://127.0.0.1:{port}"
    config = uvicorn.Config(app.create_app(self.core, metrics=self.core.metrics), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False, timeout_keep_alive=75)
    self.server = uvicorn.Server(config)
    self.thread = threading.Thread(target=self.server.run, daemon=True)
    self.thread.start()
    while not self.server.started:
      time.sleep(0.05)

  def stop(self) -> None:
    self.server.should_exit = True
    self.thread.join(60)


# ------------------------------------------------------------------- in process, no HTTP

async def _closed_loop(core, concurrency: int, total: int, prompts: int, seed: int) -> dict:
  """`concurrency` callers, each sending its next one-pair score as soon as the last is answered."""
  rng = random.Random(seed)
  latencies = []

  async def caller(n):
    for _ in range(n):
      words = rng.sample(WORDS, 5)
      start = time.perf_counter()
      await core.score(f"p{rng.randrange(prompts)}", [" ".join(words)], [words[-1]])
      latencies.append(time.perf_counter() - start)
  t0 = time.perf_counter()
  await asyncio.gather(*(caller(total // concurrency) for _ in range(concurrency)))
  return {"ok": len(latencies), "seconds": time.perf_counter() - t0, "latencies": latencies}


def batching_capacity(model_name: str, prompts, runner, wait_ms: float, totals: dict) -> list[dict]:
  """The scheduler + engine alone (no HTTP, no client process): closed-loop throughput per
  server at each concurrency, the servers interleaved per concurrency."""
  from prompt_tuning_jax.serving import service  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.text import vocab
  rows = []
  cores = {}
  for name, policy, _ in CONFIGS:
    limits = service.Limits(max_batch_rows=32, max_wait_ms=wait_ms, max_queue_rows=4096, request_timeout_s=120,
                            policy=policy)
    cores[name] = service.Service(prompts, runner, vocab.load_vocabulary(), limits)
    cores[name].start()
  for concurrency, total in totals.items():
    for name, _, count in CONFIGS:
      result = asyncio.run(_closed_loop(cores[name], concurrency, total, count, seed=concurrency))
      row = {"model": model_name, "config": name, "concurrency": concurrency, "achieved": result["ok"] / result["seconds"],
             "p50_ms": percentile(result["latencies"], 50), "p99_ms": percentile(result["latencies"], 99),
             "batches": cores[name].scheduler.batches, "load": common.loadavg()[0]}
      rows.append(row)
      print(f"  [no HTTP] {name:27s} {concurrency:3d} callers -> {row['achieved']:7.1f} req/s  "
            f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  load {row['load']}", flush=True)
  for core in cores.values():
    core.stop()
  return rows


# ---------------------------------------------------------------------------- report

def percentile(values, q):
  import numpy as np  # pylint: disable=g-import-not-at-top
  return float(np.percentile(values, q)) * 1000 if values else float("nan")


def summarize_capacity(rows: list[dict]) -> list[str]:
  lines = []
  for model in dict.fromkeys(r["model"] for r in rows):
    top = max(r["concurrency"] for r in rows if r["model"] == model)
    at = {r["config"]: r for r in rows if r["model"] == model and r["concurrency"] == top}
    mixed = at["ours, 64 prompts mixed"]["achieved"]
    lines.append(f"**{model}, no HTTP, {top} concurrent callers**: mixed 64 / 1 prompt "
                 f"{mixed / at['ours, 1 prompt']['achieved']:.2f}; batched / one at a time "
                 f"{mixed / at['one at a time, 64 prompts']['achieved']:.1f}x; ours / PEFT-style "
                 f"{mixed / at['PEFT-style, 64 prompts']['achieved']:.1f}x")
  return lines


def summarize(rows: list[dict]) -> list[str]:
  lines = []
  for model in dict.fromkeys(r["model"] for r in rows):
    best = {}
    held = {}
    for name, _, _ in CONFIGS:
      points = [r for r in rows if r["model"] == model and r["config"] == name]
      best[name] = max(p["achieved"] for p in points)
      ok = [p for p in points if not p["errors"] and p["achieved"] >= 0.95 * p["offered"]]
      held[name] = max(ok, key=lambda p: p["offered"]) if ok else None
    mixed, single = best["ours, 64 prompts mixed"], best["ours, 1 prompt"]
    lines.append(f"**{model}**: peak throughput (req/s) " + ", ".join(f"{k} {v:.0f}" for k, v in best.items()))
    lines.append(f"- mixed 64 prompts / 1 prompt: {mixed / single:.2f} (goal >= 0.9)")
    lines.append(f"- batched (ours, 64 mixed) / one at a time: {mixed / best['one at a time, 64 prompts']:.1f}x")
    lines.append(f"- ours / PEFT-style per-prompt batches: {mixed / best['PEFT-style, 64 prompts']:.1f}x")
    for name, point in held.items():
      lines.append(f"- {name}: highest load held {point['offered']} req/s, p99 {point['p99_ms']:.0f} ms"
                   if point else f"- {name}: no load point held")
  return lines


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  models = list(dict.fromkeys(r["model"] for r in rows))
  fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False)
  for ax, model in zip(axes[0], models):
    for name, _, _ in CONFIGS:
      points = [r for r in rows if r["model"] == model and r["config"] == name]
      ax.plot([p["offered"] for p in points], [p["p99_ms"] for p in points], marker="o", label=f"{name} (p99)")
    ax.set(xscale="log", yscale="log", xlabel="offered load (req/s, Poisson)", ylabel="p99 latency (ms)",
           title=f"{model}: one-pair /v1/score requests")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--models", default="demo,small")
  parser.add_argument("--duration", type=float, default=None, help="seconds of offered load per point "
                                                                      "(default: 3 demo, 6 small)")
  parser.add_argument("--max_wait_ms", type=float, default=0.0,
                      help="the servers' --max_wait_ms (0: a batch is whatever queued while the last one ran)")
  parser.add_argument("--rates", default=None, help="comma-separated req/s (default: per model)")
  parser.add_argument("--out_dir", default="bench_out")
  args = parser.parse_args()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  # On a CPU host, XLA's multi-threaded kernels spin on every core and starve the HTTP
  # threads; one compute thread leaves the rest to the server and client (as an
  # accelerator would). Set XLA_FLAGS yourself to measure otherwise.
  os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
  from prompt_tuning_jax.serving import engine  # pylint: disable=g-import-not-at-top
  buckets = engine.Buckets(rows=(1, 2, 4, 8, 16, 32), inputs=(32,), targets=(8,), candidates=(2,))
  os.makedirs(args.out_dir, exist_ok=True)
  print(f"load average before: {common.loadavg()}; XLA_FLAGS={os.environ['XLA_FLAGS']!r}; "
        f"servers: --max_batch_rows=32 --max_wait_ms={args.max_wait_ms:g} --row_buckets=1,2,4,8,16,32", flush=True)
  rows, capacity = [], []
  for model_name in args.models.split(","):
    model = MODELS[model_name]
    rates = [float(r) for r in args.rates.split(",")] if args.rates else model["rates"]
    with tempfile.TemporaryDirectory() as registry_dir:
      prompts, runner, compile_s = build_engine(model, registry_dir, buckets)
      print(f"{model_name}: compiled {runner.compiled} shapes in {compile_s:.1f} s", flush=True)
      servers = {name: Server(prompts, runner, policy, args.max_wait_ms) for name, policy, _ in CONFIGS}
      for name, _, count in CONFIGS:
        offer(servers[name].url, 20, 0.5, count, seed=99)  # warm the connection path
      saturated = set()
      for k, rate in enumerate(rates):  # every server at one rate before the next: similar machine load
        for name, _, count in CONFIGS:
          if name in saturated:
            continue
          result = offer(servers[name].url, rate, args.duration or model["duration"], count, seed=k)
          row = {"model": model_name, "config": name, "offered": rate, "achieved": result["ok"] / result["seconds"],
                 "p50_ms": percentile(result["latencies"], 50), "p99_ms": percentile(result["latencies"], 99),
                 "sent": result["sent"], "errors": result["errors"], "load": common.loadavg()[0]}
          rows.append(row)
          print(f"  {name:27s} {rate:6.0f} req/s -> {row['achieved']:6.1f} req/s  p50 {row['p50_ms']:7.1f} ms  "
                f"p99 {row['p99_ms']:7.1f} ms  errors {row['errors'] or 0}  load {row['load']}", flush=True)
          if row["achieved"] < 0.8 * rate:  # past its capacity: higher rates only grow the backlog
            saturated.add(name)
      for server in servers.values():
        server.stop()
      capacity += batching_capacity(model_name, prompts, runner, args.max_wait_ms, model["closed_loop"])
  print()
  print("| model | server | offered req/s | achieved req/s | p50 ms | p99 ms | errors | load avg |")
  print("|---|---|---:|---:|---:|---:|---|---:|")
  for r in rows:
    print(f"| {r['model']} | {r['config']} | {r['offered']:.0f} | {r['achieved']:.1f} | {r['p50_ms']:.1f} | "
          f"{r['p99_ms']:.1f} | {sum(r['errors'].values()) if r['errors'] else 0} | {r['load']:.1f} |")
  print()
  print("| model | server (no HTTP) | callers | req/s | p50 ms | p99 ms | load avg |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for r in capacity:
    print(f"| {r['model']} | {r['config']} | {r['concurrency']} | {r['achieved']:.1f} | {r['p50_ms']:.1f} | "
          f"{r['p99_ms']:.1f} | {r['load']:.1f} |")
  print()
  print("\n".join(summarize(rows) + summarize_capacity(capacity)))
  path = os.path.join(args.out_dir, "serve_load.png")
  plot(rows, path)
  with open(os.path.join(args.out_dir, "serve_load.json"), "w") as f:
    json.dump({"http": rows, "no_http": capacity}, f, indent=1)
  print(f"\nplot: {path}; load average after: {common.loadavg()}")


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == CLIENT_FLAG:
    url, rate, duration, prompts, seed = sys.argv[2:7]
    print(json.dumps(asyncio.run(_client(url, float(rate), float(duration), int(prompts), int(seed)))))
  else:
    main()
