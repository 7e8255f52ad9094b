"""Flags -> a running server: the frozen backbone from gin (as `score` loads it), the
registry, the warmed engine, the app, uvicorn; SIGTERM drains and exits 0."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from typing import Any

ADMIN_TOKEN_ENV = "PTJ_SERVE_ADMIN_TOKEN"


def add_flags(parser: argparse.ArgumentParser) -> None:
  add = parser.add_argument
  add("--prompt_dir", required=True, help="the prompt registry: a folder (local or gs://) of prompts as `export` "
                                          "writes them; each is served under its file/folder name without extension")
  add("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
  add("--port", type=int, default=8000)
  add("--max_batch_rows", type=int, default=32, help="rows per forward at most (a row: one input or pair)")
  add("--max_wait_ms", type=float, default=5.0, help="how long the oldest queued row waits for a fuller batch")
  add("--max_queue_rows", type=int, default=1024, help="rows queued or running at most; past it: 503 + Retry-After")
  add("--request_timeout_s", type=float, default=30.0, help="a request not answered in time gets 504")
  add("--batching", default="mixed", choices=("mixed", "per_prompt", "single"),
      help="mixed: any prompts in one batch; per_prompt: one prompt per batch (PEFT-style); single: one request "
           "per forward (the benchmark's references)")
  add("--row_buckets", default="8,32", help="compiled batch sizes (comma-separated, increasing)")
  add("--input_buckets", default="32,128", help="compiled input lengths; the last is the longest input accepted")
  add("--target_buckets", default="8,32", help="compiled target/label/decode lengths; the last is the limit")
  add("--candidate_buckets", default="4,16", help="compiled label counts for /v1/classify; the last is the limit")
  add("--default_decode_length", type=int, default=8, help="/v1/generate's max_decode_length when not given")
  add("--prompt_capacity", type=int, default=16, help="prompt bank rows (a power of two; doubles when full)")
  add("--admin_token", default=None, help=f"bearer token for POST/DELETE /v1/prompts (or ${ADMIN_TOKEN_ENV})")
  add("--vocabulary", default=None, help="SentencePiece model (default: bundled T5 vocabulary)")
  add("--access_log", action="store_true", help="log every request (uvicorn's access log)")


def _ints(flag: str, text: str) -> tuple[int, ...]:
  try:
    values = tuple(int(v) for v in text.split(",") if v.strip())
  except ValueError:
    raise SystemExit(f"--{flag}={text}: expected comma-separated integers, e.g. 8,32") from None
  if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
    raise SystemExit(f"--{flag}={text}: expected increasing positive integers, e.g. 8,32")
  return values


def check_flags(args: argparse.Namespace) -> None:
  """Refuse bad flags in one line before anything loads."""
  for flag in ("max_batch_rows", "max_queue_rows", "default_decode_length", "prompt_capacity"):
    if getattr(args, flag) < 1:
      raise SystemExit(f"--{flag}={getattr(args, flag)}: must be >= 1")
  if args.max_wait_ms < 0 or args.request_timeout_s <= 0:
    raise SystemExit("--max_wait_ms must be >= 0 and --request_timeout_s > 0")
  if "://" not in args.prompt_dir and not os.path.isdir(args.prompt_dir):
    raise SystemExit(f"--prompt_dir={args.prompt_dir}: not a folder (a registry of prompts as `export` writes them)")
  if not 0 <= args.port < 65536:
    raise SystemExit(f"--port={args.port}: expected 0..65535")
  rows = _ints("row_buckets", args.row_buckets)
  if args.max_batch_rows > rows[-1]:
    raise SystemExit(f"--max_batch_rows={args.max_batch_rows} exceeds the largest --row_buckets value {rows[-1]}")
  for flag in ("input_buckets", "target_buckets", "candidate_buckets"):
    _ints(flag, getattr(args, flag))


def build(args: argparse.Namespace, model_config: Any, log=print) -> tuple[Any, Any]:
  """Load the backbone and the registry, warm every shape -> (service, app)."""
  from prompt_tuning_jax.evaluators import sharded  # pylint: disable=g-import-not-at-top
  from prompt_tuning_jax.serving import app as app_lib, engine, metrics as metrics_lib, registry, service
  from prompt_tuning_jax.text import vocab as vocab_lib

  if not model_config.checkpoint_path:
    raise SystemExit("set --gin.CHECKPOINT_PATH=... (a T5X checkpoint, HF T5 folder or 'random:<seed>')")
  start = time.perf_counter()
  prompts = registry.PromptRegistry(args.prompt_dir, emb_dim=model_config.t5.emb_dim, capacity=args.prompt_capacity)
  try:
    loaded, skipped = prompts.scan()
  except (ValueError, FileNotFoundError, OSError) as e:
    raise SystemExit(f"--prompt_dir: {e}") from None
  if not loaded:
    raise SystemExit(f"--prompt_dir={args.prompt_dir}: no prompts found (put .npy files, PEFT adapter folders "
                     "or export/run folders there)" + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))
  for line in skipped:
    log(f"skipped {line}")
  for entry in prompts.listing():
    log(f"prompt {entry['name']!r} <- {entry['path']} {tuple(entry['shape'])}")
  where = sharded.start(model_config.partition)
  frozen, _ = sharded.load_backbone(model_config.checkpoint_path, model_config.t5, where)
  log(f"backbone {model_config.checkpoint_path} (emb_dim {model_config.t5.emb_dim}, dtype {model_config.t5.dtype}) "
      f"on {where.mesh.devices.size} device(s), loaded in {time.perf_counter() - start:.1f} s")
  buckets = engine.Buckets(rows=_ints("row_buckets", args.row_buckets), inputs=_ints("input_buckets", args.input_buckets),
                           targets=_ints("target_buckets", args.target_buckets),
                           candidates=_ints("candidate_buckets", args.candidate_buckets))
  runner = engine.Engine(model_config.t5, frozen, prompts.bank(), where, model_config.prompt, buckets)
  metrics = metrics_lib.Metrics()
  limits = service.Limits(max_batch_rows=args.max_batch_rows, max_wait_ms=args.max_wait_ms,
                          max_queue_rows=args.max_queue_rows, request_timeout_s=args.request_timeout_s,
                          default_decode_length=args.default_decode_length, policy=args.batching)
  core = service.Service(prompts, runner, vocab_lib.load_vocabulary(args.vocabulary), limits, metrics)
  metrics.prompts.set(len(loaded))
  compiled = runner.warm(log=log)
  log(f"compiled {compiled} shapes in {runner.compile_seconds:.1f} s (rows {runner.buckets.rows}, inputs "
      f"{buckets.inputs}, targets {buckets.targets}, candidates {buckets.candidates}); batching={args.batching}")
  token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None
  return core, app_lib.create_app(core, admin_token=token, metrics=metrics)


def serve(args: argparse.Namespace, model_config: Any) -> int:
  """Run until SIGTERM/SIGINT: stop accepting, finish in-flight requests, drain, return 0."""
  try:
    import uvicorn  # pylint: disable=g-import-not-at-top
    import fastapi  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import prometheus_client  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise SystemExit(f"serve needs the server packages ({e.name} is missing): pip install 'prompt_tuning_jax[serve]'")
  token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV)
  if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
    print(f"warning: listening on {args.host} with no --admin_token: anyone who reaches it can register and "
          "delete prompts", file=sys.stderr)
  core, app = build(args, model_config)
  core.start()
  config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=args.access_log,
                          timeout_graceful_shutdown=int(args.request_timeout_s) + 5, lifespan="on")
  server = uvicorn.Server(config)
  # uvicorn re-raises the signal it caught after its graceful shutdown; this handler takes
  # that re-raise, so a drained server exits 0 instead of dying of the signal.
  signal.signal(signal.SIGTERM, lambda *_: None)
  print(f"listening on http://{args.host}:{args.port} ({len(core.registry.names())} prompts; API page "
        f"http://{args.host}:{args.port}/docs)", flush=True)
  server.run()
  print(f"stopped: drained, {core.scheduler.batches} batches served", flush=True)
  return 0
