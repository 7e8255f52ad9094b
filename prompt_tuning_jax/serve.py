"""Serve many trained prompts from one frozen model over HTTP, every prompt mixed in one batch.

  python -m prompt_tuning_jax.serve --gin_file=models/t5_1_1_base.gin \
    --gin.CHECKPOINT_PATH=/path/to/checkpoint_1100000 --prompt_dir=prompts/ [--port=8000]

The backbone comes from the same gin files and checkpoint macro as `score` and `eval`;
each entry of --prompt_dir (a .npy, numpy checkpoint, PEFT adapter folder or a run/export
folder) is served under its name without extension (`rte.npy` is `rte`). API: POST
/v1/score, /v1/classify, /v1/generate; GET/POST /v1/prompts, DELETE /v1/prompts/NAME;
/healthz, /readyz, /metrics; the interactive API page is /docs. See docs/SERVING.md.
"""
from __future__ import annotations

from typing import Sequence

from prompt_tuning_jax import cli


@cli.command
def main(argv: Sequence[str]) -> int:
  from prompt_tuning_jax.serving import server  # light: its heavy imports happen in build()
  parser = cli.ArgumentParser(description=__doc__)
  server.add_flags(parser)
  args = cli.parse(parser, argv, defaults=["runs/score.gin"])
  server.check_flags(args)
  from prompt_tuning_jax.evaluators import scorer  # pylint: disable=g-import-not-at-top
  model_config = cli.build_config(scorer.ScoreConfig).model
  cli.check_model(model_config)
  return server.serve(args, model_config)


if __name__ == "__main__":
  raise SystemExit(main())
