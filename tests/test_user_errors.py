"""Every user mistake of the commands: ONE line `error: ...` on stderr naming what is wrong
and what to do, exit status 2, no traceback, before any model or dataset loads, and
nothing written. Each case runs the command as a user would (`python -m ...` in a fresh
interpreter, from a scratch folder); the time bound is a generous ceiling for a loaded
2-core machine (issue 18 asks for 10 s on a quiet one; `python tests/test_user_errors.py`
prints the measured seconds per case as a table).

Cases that need SeqIO (task names, data folders) import TensorFlow first, which alone
takes seconds; they get a higher ceiling and, but for one, the `slow` mark.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = str(REPO / "tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0")
CONFIG_CEILING_S = 45  # config and path errors: jax import + gin parse, under load
SEQIO_CEILING_S = 150  # task and data-folder errors: SeqIO and TensorFlow import first


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  command: str
  argv: tuple[str, ...]
  expect: tuple[str, ...]  # substrings of the one line
  env: tuple[tuple[str, str], ...] = ()
  ceiling_s: float = CONFIG_CEILING_S
  slow: bool = False


def _train(*extra: str) -> tuple[str, ...]:
  return ("--gin_file=tests/tiny_inline.gin", "--gin_file=runs/prompt_tuning.gin",
          f"--gin.INITIAL_CHECKPOINT_PATH={FIXTURE}", *extra)


def _eval(*extra: str) -> tuple[str, ...]:
  return ("--gin_file=tests/tiny_inline.gin", f"--gin.CHECKPOINT_PATH={FIXTURE}", *extra)


def prepare(scratch: pathlib.Path) -> pathlib.Path:
  """The folders the cases name: an empty and a partial SuperGLUE folder, a run folder
  that has no prompt yet."""
  (scratch / "superglue_empty").mkdir(exist_ok=True)
  (scratch / "superglue_partial" / "RTE").mkdir(parents=True, exist_ok=True)
  (scratch / "superglue_partial" / "RTE" / "train.jsonl").write_text(
      '{"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0}\n')
  (scratch / "unfinished").mkdir(exist_ok=True)
  (scratch / "unfinished" / "config.gin").write_text("# a run that has not saved a prompt yet\n")
  return scratch


def cases(scratch: pathlib.Path) -> list[Case]:
  """The mistakes, with paths under `scratch` (see `prepare`)."""
  run = str(scratch / "run")
  empty_data, partial_data, unfinished = scratch / "superglue_empty", scratch / "superglue_partial", scratch / "unfinished"
  task = "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskless"
  return [
      Case("train with no arguments", "train", (), ("train needs a run configuration", "--gin.MODEL_DIR")),
      Case("train without MODEL_DIR", "train", _train(task), ("%MODEL_DIR not set", "--gin.MODEL_DIR=")),
      Case("gin file that does not exist", "train", ("--gin_file=runs/prompt_tunning.gin", f"--gin.MODEL_DIR={run}"),
           ("--gin_file=runs/prompt_tunning.gin: not found", "--gin_search_paths")),
      Case("misspelled macro", "train", _train(f"--gin.MODEL_DIR={run}", "--gin.TRAIN_STEPZ=2"),
           ("--gin.TRAIN_STEPZ: unknown gin macro", "closest known: TRAIN_STEPS")),
      Case("INITIAL_CHECKPOINT_PATH that does not exist", "train",
           _train(f"--gin.MODEL_DIR={run}", task, f"--gin.INITIAL_CHECKPOINT_PATH={scratch}/no_such_checkpoint"),
           ("INITIAL_CHECKPOINT_PATH=", "no_such_checkpoint: no such file or directory", "random:<seed>")),
      Case("unknown flag", "train", _train(f"--gin.MODEL_DIR={run}", "--distributed_timeout=3"),
           ("unrecognized arguments: --distributed_timeout=3", "--help")),
      Case("misspelled task name", "train", _train(f"--gin.MODEL_DIR={run}", "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_taskles"),
           ("MIXTURE_OR_TASK_NAME='superglue_rte_taskles' is not a registered task",
            "closest registered: superglue_rte_taskless"), ceiling_s=SEQIO_CEILING_S),
      Case("empty PTJ_SUPERGLUE_DIR", "train", _train(f"--gin.MODEL_DIR={run}", task),
           (f"PTJ_SUPERGLUE_DIR={empty_data} lacks the files", "RTE/train.jsonl", "RTE/val.jsonl"),
           env=(("PTJ_SUPERGLUE_DIR", str(empty_data)),), ceiling_s=SEQIO_CEILING_S, slow=True),
      Case("partial PTJ_SUPERGLUE_DIR", "train", _train(f"--gin.MODEL_DIR={run}", task),
           (f"PTJ_SUPERGLUE_DIR={partial_data} lacks the files", "RTE/val.jsonl"),
           env=(("PTJ_SUPERGLUE_DIR", str(partial_data)),), ceiling_s=SEQIO_CEILING_S, slow=True),
      Case("SuperGLUE on TFDS, not prepared, downloads off", "train", _train(f"--gin.MODEL_DIR={run}", task),
           ("super_glue/rte:1.0.2 is not prepared", "tfds build super_glue --config rte", "PTJ_SUPERGLUE_DIR"),
           env=(("PTJ_TFDS_DATA_DIR", str(scratch / "tfds_empty")), ("PTJ_TFDS_DOWNLOAD", "never")),
           ceiling_s=SEQIO_CEILING_S, slow=True),
      Case("eval: MRQA on TFDS, not prepared, downloads off", "eval",
           _eval("--gin.MIXTURE_OR_TASK_NAME=mrqa_bioasq"),
           ("mrqa/bio_asq:1.0.0 is not prepared", "PTJ_MRQA_DIR", "dev/BioASQ.jsonl.gz"),
           env=(("PTJ_TFDS_DATA_DIR", str(scratch / "tfds_empty")), ("PTJ_TFDS_DOWNLOAD", "never")),
           ceiling_s=SEQIO_CEILING_S, slow=True),
      Case("eval: CHECKPOINT_PATH that does not exist", "eval",
           ("--gin_file=tests/tiny_inline.gin", f"--gin.CHECKPOINT_PATH={scratch}/no_such_checkpoint"),
           ("CHECKPOINT_PATH=", "no such file or directory")),
      Case("eval: prompt file that does not exist", "eval", _eval(f"--prompt={scratch}/rte.npy"),
           (f"--prompt={scratch}/rte.npy: no such file or directory",)),
      Case("eval: a run with no prompt yet", "eval", _eval(f"--prompt={unfinished}"),
           (f"--prompt={unfinished}",)),
      Case("eval: unknown mode", "eval", _eval("--mode=sample"), ("mode='sample'", "greedy")),
      Case("eval: misspelled task name", "eval", _eval("--gin.MIXTURE_OR_TASK_NAME=superglue_cb_sample_taskles"),
           ("not a registered task", "closest registered: superglue_cb_sample_taskless"),
           ceiling_s=SEQIO_CEILING_S, slow=True),
      Case("infer: missing --input_file", "infer", _eval("--output_file=out.jsonl"),
           ("the following arguments are required: --input_file",)),
      Case("score: input file that does not exist", "score",
           _eval(f"--input_file={scratch}/pairs.jsonl", "--output_file=out.jsonl"),
           (f"--input_file={scratch}/pairs.jsonl: no such file or directory",)),
      Case("export: prompt that does not exist", "export", (f"--prompt={scratch}/p.npy", f"--output_dir={scratch}/out"),
           (f"{scratch}/p.npy",)),
      Case("convert: input that does not exist", "convert",
           ("--from_format=t5x", "--to_format=hf", f"--input={scratch}/ckpt", f"--output={scratch}/hf"),
           (f"--input={scratch}/ckpt: no such file or directory",)),
      Case("convert: unknown format", "convert", ("--from_format=onnx", "--to_format=hf", "--input=x", "--output=y"),
           ("--from_format: invalid choice: 'onnx'",)),
      Case("plan: unknown topology", "plan", ("--topology=v9-999",), ("v9-999",)),
      Case("reproduce: unknown experiment", "reproduce", ("--experiment=mian", "--dry-run"),
           ("--experiment: invalid choice: 'mian'",)),
      Case("demo: bad --steps", "demo", ("--steps=ten",), ("--steps: invalid int value: 'ten'",)),
      Case("inspect_prompt: prompt that does not exist", "inspect_prompt",
           (f"--prompt={scratch}/p.npy", f"--checkpoint={FIXTURE}"),
           (f"--prompt={scratch}/p.npy: no such file or directory",)),
  ]


def run(case: Case, cwd: pathlib.Path, *extra: str, env: dict[str, str] | None = None
        ) -> tuple[subprocess.CompletedProcess, float]:
  """`python -m prompt_tuning_jax.<command> ...` in a fresh interpreter; (result, seconds)."""
  if env is None:
    env = {k: v for k, v in os.environ.items() if k not in ("PTJ_VERBOSE", "PTJ_SUPERGLUE_DIR", "PTJ_MRQA_DIR", "PTJ_SQUAD_DIR")}
  env = dict(env, **dict(case.env))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
  start = time.perf_counter()
  result = subprocess.run([sys.executable, "-m", f"prompt_tuning_jax.{case.command}", *case.argv, *extra],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
  return result, time.perf_counter() - start


@pytest.mark.parametrize("index", [
    pytest.param(i, id=c.name.replace(" ", "_"), marks=[pytest.mark.slow] if c.slow else [])
    for i, c in enumerate(cases(pathlib.Path("/scratch")))])
def test_mistake_gets_one_line_exit_2_no_traceback(tmp_path, index):
  case = cases(prepare(tmp_path))[index]
  result, seconds = run(case, tmp_path)
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2, f"{case.name}: exit {result.returncode}\n{result.stderr[-3000:]}"
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), f"{case.name}: stderr was\n{result.stderr[-3000:]}"
  for part in case.expect:
    assert part in lines[0], f"{case.name}: {part!r} not in {lines[0]!r}"
  assert result.stdout == "", result.stdout[-2000:]
  assert not (tmp_path / "run").exists(), "a refused run wrote its MODEL_DIR"
  assert seconds < case.ceiling_s, f"{case.name}: {seconds:.1f} s"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_verbose_shows_the_traceback(tmp_path, how):
  case = cases(tmp_path)[1]  # train without MODEL_DIR
  env = {k: v for k, v in os.environ.items() if k != "PTJ_VERBOSE"}
  env["PTJ_VERBOSE"] = "1" if how == "env" else "0"
  result, _ = run(case, tmp_path, *(["--verbose"] if how == "flag" else []), env=env)
  assert result.returncode != 0
  assert "Traceback" in result.stderr and "%MODEL_DIR not set" in result.stderr, result.stderr[-2000:]


def main() -> None:
  """Print the table of mistakes: the one line, exit status and seconds (with the load)."""
  import tempfile
  scratch = prepare(pathlib.Path(tempfile.mkdtemp(prefix="ptj_user_errors_")))
  print(f"load average before: {os.getloadavg()}")
  print("| mistake | command | the line printed | exit | seconds |")
  print("|---|---|---|---|---|")
  for case in cases(scratch):
    result, seconds = run(case, scratch)
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    shown = " / ".join(lines).replace(str(scratch), "$TMP").replace(str(REPO), ".").replace("|", "\\|")
    print(f"| {case.name} | {case.command} | `{shown}` | {result.returncode} | {seconds:.1f} |", flush=True)
  print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
  main()
