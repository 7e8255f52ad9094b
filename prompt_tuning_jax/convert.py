"""Convert a frozen T5 between T5X and Hugging Face checkpoint formats.

  python -m prompt_tuning_jax.convert --from_format=t5x --to_format=hf \
      --input=gs://.../checkpoint_1100000 --output=/tmp/t5_hf

T5X output goes to `--output/checkpoint_<step>/` (step: --step, else the input's
step, else 0). The T5 config is read off the weights (T5X) or config.json (HF).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prompt_tuning_jax import cli

if TYPE_CHECKING:
  from prompt_tuning_jax.model.config import T5Config

FORMATS = ("t5x", "hf")


def load(fmt: str, path: str, dtype: str | None = None) -> tuple[dict[str, Any], T5Config, int | None]:
  """(params, config, step or None) from a checkpoint in format `fmt`."""
  from prompt_tuning_jax.checkpoints import hf, t5x  # pylint: disable=g-import-not-at-top
  if fmt == "t5x":
    ckpt = t5x.read_t5x_checkpoint(path, dtype=dtype)
    return ckpt.params, t5x.infer_t5_config(ckpt.params), ckpt.step
  params, cfg = hf.load_hf_checkpoint(path)
  return (params if dtype is None else t5x.cast_params(params, dtype)), cfg, None


def convert(from_format: str, to_format: str, input_path: str, output_path: str, *, step: int | None = None,
            dtype: str | None = None) -> str:
  """Read `input_path` as `from_format`, write `output_path` as `to_format`; return the written path."""
  for flag, fmt in (("--from_format", from_format), ("--to_format", to_format)):
    if fmt not in FORMATS:
      raise ValueError(f"{flag}={fmt!r}: must be one of {FORMATS}")
  params, cfg, input_step = load(from_format, input_path, dtype)
  from prompt_tuning_jax.checkpoints import hf, t5x  # pylint: disable=g-import-not-at-top
  if to_format == "hf":
    return hf.save_hf_checkpoint(output_path, params, cfg)
  out_step = step if step is not None else (input_step if input_step is not None else 0)
  return t5x.write_t5x_checkpoint(output_path, params, out_step)


@cli.command
def main(argv: Sequence[str]) -> int:
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument("--from_format", required=True, choices=FORMATS)
  parser.add_argument("--to_format", required=True, choices=FORMATS)
  parser.add_argument("--input", required=True, help="T5X checkpoint dir/file or HF model dir")
  parser.add_argument("--output", required=True, help="T5X model dir (checkpoint_<step>/ is created) or HF dir")
  parser.add_argument("--step", type=int, default=None, help="step of the written T5X checkpoint")
  parser.add_argument("--dtype", default=None, choices=("float32", "bfloat16"), help="cast floating weights")
  args = parser.parse_args(argv)
  cli.check_paths("--input", [args.input])
  written = convert(args.from_format, args.to_format, args.input, args.output, step=args.step, dtype=args.dtype)
  print(f"wrote {args.to_format} checkpoint to {written}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
