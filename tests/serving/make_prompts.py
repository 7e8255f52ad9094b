"""Make the two trained demo prompts the serving tests load (tests/testdata/serving/).

  nice -n 10 python tests/serving/make_prompts.py [--steps 120]

Trains a 10-token prompt on the bundled demo model for each of two taskless demo tasks
(`demo_last_word_taskless`, `demo_first_word_taskless`) with the demo's recipe
(`prompt_tuning_jax.demo.demo_config`: Adafactor lr 0.3, sampled-vocab init) and saves the
best prompt as `last_word.npy` / `first_word.npy` (float32 [10, 64], 2.5 KB each), plus
`PROVENANCE.json` (command, steps, dev accuracy). Deterministic for a given seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile

import numpy as np

from prompt_tuning_jax import demo
from prompt_tuning_jax.prompt import initializers
from prompt_tuning_jax.trainer import loop

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "testdata", "serving")
TASKS = {"last_word": "demo_last_word_taskless", "first_word": "demo_first_word_taskless"}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=120)
  args = parser.parse_args()
  os.makedirs(OUT, exist_ok=True)
  provenance = {"made_by": "python tests/serving/make_prompts.py --steps %d" % args.steps,
                "model": "prompt_tuning_jax/assets/demo_model/checkpoint_1500", "prompts": {}}
  for name, task in TASKS.items():
    with tempfile.TemporaryDirectory() as tmp:
      cfg = demo.demo_config(tmp, steps=args.steps, prompt_length=10, init=initializers.sampled_vocab(5000))
      cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mixture_or_task_name=task))
      result = loop.train(cfg)
      prompt = np.load(os.path.join(tmp, "best", "prompt.npy"))
      np.save(os.path.join(OUT, f"{name}.npy"), prompt.astype(np.float32))
      provenance["prompts"][name] = {"task": task, "shape": list(prompt.shape), "best_step": result.best["step"],
                                     "dev_accuracy": result.best.get("value")}
      print(name, provenance["prompts"][name])
  with open(os.path.join(OUT, "PROVENANCE.json"), "w") as f:
    json.dump(provenance, f, indent=2)
    f.write("\n")


if __name__ == "__main__":
  main()
