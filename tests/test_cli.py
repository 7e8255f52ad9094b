"""Entry points driven like a user would: T5X-style gin flags, files in, files out."""
import argparse
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

import gin
from prompt_tuning_jax import cli, score, train
from prompt_tuning_jax.text import vocab
from prompt_tuning_jax.checkpoints import backbone, hf
from prompt_tuning_jax.model.config import SIZES

FIXTURE = "tests/testdata/t5x_checkpoints/test_t5_tiny.checkpoint_0"


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _hf_log_likelihood(params, cfg, inputs, targets):
  v = vocab.load_vocabulary()
  model = hf.to_hf_torch_model(params, cfg)
  enc = torch.tensor([list(v.encode(inputs)) + [1]])
  tgt = list(v.encode(targets)) + [1]
  dec_in = torch.tensor([[0] + tgt[:-1]])
  with torch.no_grad():
    logp = torch.log_softmax(model(input_ids=enc, decoder_input_ids=dec_in).logits, -1)[0]
  return float(sum(logp[i, t] for i, t in enumerate(tgt))), [float(logp[i, t]) for i, t in enumerate(tgt)]


@pytest.mark.parametrize("mesh_flags", [[], ["--gin.NUM_PARTITIONS=2"]], ids=["data8", "data4_model2"])
def test_score_matches_huggingface_log_likelihoods(tmp_path, monkeypatch, mesh_flags):
  """On the 8 test devices, as 8 data replicas and as 4 x 2 (weights split over 'model')."""
  monkeypatch.chdir(tmp_path.parent)  # gin files and fixtures are found from the repo, not cwd
  repo = __import__("pathlib").Path(__file__).parents[1]
  pairs = [{"inputs": "rte hypothesis: A dog runs. premise: An animal moves fast.", "targets": "entailment"},
           {"inputs": "wic sentence1: bank of a river sentence2: a bank loan word: bank", "targets": "False"}]
  src = tmp_path / "pairs.jsonl"
  src.write_text("\n".join(json.dumps(p) for p in pairs) + "\n")
  out = tmp_path / "scores.jsonl"
  score.main(["--gin_file=tests/tiny_inline.gin", f"--gin.CHECKPOINT_PATH={repo / FIXTURE}",
              f"--input_file={src}", f"--output_file={out}", *mesh_flags])
  rows = [json.loads(l) for l in out.read_text().splitlines()]
  params, _ = backbone.load_frozen(str(repo / FIXTURE), SIZES["tiny_inline"])
  params = jax.device_get(params)
  for row, pair in zip(rows, pairs):
    total, per_token = _hf_log_likelihood(params, SIZES["tiny_inline"], pair["inputs"], pair["targets"])
    assert row["inputs"] == pair["inputs"]
    np.testing.assert_allclose(row["score"], total, rtol=1e-5)
    np.testing.assert_allclose(row["token_log_probs"], per_token, rtol=1e-5, atol=1e-6)
    assert row["target_ids"][-1] == 1  # EOS appended


def test_score_names_the_malformed_line(tmp_path):
  src = tmp_path / "bad.jsonl"
  src.write_text('{"inputs": "a", "targets": "b"}\n{"inputs": "no target"}\n')
  with pytest.raises(SystemExit, match="bad.jsonl:2"):
    score.main(["--gin_file=tests/tiny_inline.gin", f"--gin.CHECKPOINT_PATH={FIXTURE}",
                f"--input_file={src}", f"--output_file={tmp_path / 'o.jsonl'}"])


@pytest.mark.slow
def test_train_cli_t5x_style_flags(tmp_path):
  model_dir = tmp_path / "run"
  result = train.main([
      "--gin_file=tests/tiny_inline.gin", "--gin_file=runs/prompt_tuning.gin",
      f"--gin.MODEL_DIR={model_dir}", "--gin.MIXTURE_OR_TASK_NAME=superglue_rte_sample_taskless",
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 4}", f"--gin.INITIAL_CHECKPOINT_PATH={FIXTURE}",
      "--gin.TRAIN_STEPS=2", "--gin.BATCH_SIZE=8", "--gin.PROMPT_LENGTH=3", "--gin.EVAL_PERIOD=2",
      "--gin.TrainConfig.progress_bar=False"])
  assert result.step == 2
  assert np.load(model_dir / "prompt.npy").shape == (3, 8)
  operative = (model_dir / "config.gin").read_text()
  assert "PROMPT_LENGTH = 3" in operative and "PromptConfig.length = %PROMPT_LENGTH" in operative
  evals = [json.loads(l) for l in (model_dir / "metrics.jsonl").read_text().splitlines() if '"eval/' in l]
  assert evals and "eval/accuracy" in evals[-1]


def test_unknown_gin_file_is_named(tmp_path):
  with pytest.raises(SystemExit, match="no_such.gin"):
    train.main(["--gin_file=no_such.gin", f"--gin.MODEL_DIR={tmp_path}"])


@pytest.mark.timeout(300)
def test_module_entry_point_runs(tmp_path):
  out = subprocess.run([sys.executable, "-m", "prompt_tuning_jax.convert", "--help"], capture_output=True, text=True)
  assert out.returncode == 0 and "--from_format" in out.stdout


def _no_work(monkeypatch):
  """Fail the test if a command gets as far as model or data work."""
  from prompt_tuning_jax.trainer import loop

  def refuse(*_, **__):
    raise AssertionError("model/data work started before the gin flags were checked")
  monkeypatch.setattr(loop, "train", refuse)
  monkeypatch.setattr(backbone, "load_frozen", refuse)


TRAIN = ["--gin_file=tests/tiny_inline.gin", "--gin_file=runs/prompt_tuning.gin", "--gin.MODEL_DIR=/nonexistent/run"]


@pytest.mark.parametrize("flag, named, closest", [
    ("--gin.TRAIN_STEPZ=2", "--gin.TRAIN_STEPZ: unknown gin macro", "TRAIN_STEPS"),
    ("--gin.PROMPT_LENTH=5", "--gin.PROMPT_LENTH: unknown gin macro", "PROMPT_LENGTH"),
    ("--gin.T5Config.emb_dimz=8", "--gin.T5Config.emb_dimz: Configurable 'T5Config' doesn't have", "emb_dim"),
    ("--gin.OptimConfg.learning_rate=0.1", "--gin.OptimConfg.learning_rate: No configurable", "OptimConfig"),
])
def test_unknown_gin_macro_or_binding_is_refused_before_any_work(monkeypatch, flag, named, closest):
  import time
  _no_work(monkeypatch)
  cli.register_configurables()  # imports are not what this measures
  start = time.perf_counter()
  with pytest.raises(SystemExit) as err:
    train.main(TRAIN + [flag])
  assert time.perf_counter() - start < 2.0
  message = str(err.value)
  assert message.startswith(named) and f"closest known: {closest}" in message, message


def test_known_macros_come_from_the_parsed_files_only(monkeypatch, tmp_path):
  _no_work(monkeypatch)
  # TRAIN_STEPS is known to runs/prompt_tuning.gin, not to a model file alone
  with pytest.raises(SystemExit, match="--gin.TRAIN_STEPS: unknown gin macro"):
    train.main(["--gin_file=tests/tiny_inline.gin", "--gin.TRAIN_STEPS=2"])
  gin.clear_config()
  # a macro the command line itself references is known
  with pytest.raises(AssertionError, match="model/data work started"):
    train.main(TRAIN[:2] + [f"--gin.MODEL_DIR={tmp_path}", f"--gin.INITIAL_CHECKPOINT_PATH={FIXTURE}",
                            "--gin.MIXTURE_OR_TASK_NAME=demo_last_word_taskless", "--gin.MY_STEPS=2",
                            "--gin.TrainConfig.train_steps=%MY_STEPS"])
  # the binding was accepted (config.gin itself is written only once the run's resume checks pass)
  assert gin.query_parameter("TrainConfig.train_steps").scoped_selector == "MY_STEPS/gin.macro"
  assert not (tmp_path / "config.gin").exists()


def test_includes_resolve_past_a_runs_folder_in_the_working_directory(tmp_path, monkeypatch):
  """A ./runs folder (e.g. a user's run outputs) is an importable namespace package; gin's
  resource reader raises TypeError on 'runs/x.gin' then. Includes are resolved by cli."""
  (tmp_path / "runs").mkdir()
  monkeypatch.chdir(tmp_path)
  monkeypatch.syspath_prepend(str(tmp_path))
  cli.parse(argparse.ArgumentParser(), ["--gin_file=models/demo.gin", "--gin_file=paper/demo.gin",
                                        f"--gin.MODEL_DIR={tmp_path / 'runs' / 'a'}"])
  assert gin.query_parameter("%TRAIN_STEPS") == 300  # paper/demo.gin over its include runs/prompt_tuning.gin
  assert gin.query_parameter("%PROMPT_LENGTH") == 10


def test_include_errors_name_the_file_and_line(tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("# a comment\ninclude 'runs/no_such.gin'\n")
  with pytest.raises(SystemExit, match=r"bad.gin:2: include=runs/no_such.gin: not found"):
    cli.parse_gin([str(bad)], [], [str(cli.GIN_DIR)])
  loop_file = tmp_path / "loop.gin"
  loop_file.write_text(f"include '{loop_file}'\n")
  with pytest.raises(SystemExit, match="include cycle"):
    cli.parse_gin([str(loop_file)], [], [str(cli.GIN_DIR)])


def test_a_command_run_as_a_program_prints_one_line_and_returns_2(monkeypatch, capsys):
  """`main()` (as `python -m` and the console scripts call it): one line, status 2; with an
  argv list (other Python code) the error is raised for the caller."""
  monkeypatch.delenv("PTJ_VERBOSE", raising=False)
  argv = ["--gin_file=tests/tiny_inline.gin", "--gin_file=runs/prompt_tuning.gin",
          "--gin.MIXTURE_OR_TASK_NAME=demo_last_word_taskless"]
  monkeypatch.setattr(sys, "argv", ["train", *argv])
  assert train.main() == 2
  captured = capsys.readouterr()
  assert captured.err == ("error: %MODEL_DIR not set (gin/runs/prompt_tuning.gin uses %MODEL_DIR): "
                          "add --gin.MODEL_DIR=...\n")
  gin.clear_config()
  with pytest.raises(cli.UsageError, match="%MODEL_DIR not set"):
    train.main(argv)


def test_argparse_mistakes_are_usage_errors_and_abbreviations_are_refused():
  parser = cli.ArgumentParser(prog="cmd")
  parser.add_argument("--distributed_timeout_s", type=int)
  with pytest.raises(cli.UsageError, match=r"unrecognized arguments: --distributed_timeout=3 \(see cmd --help\)"):
    parser.parse_args(["--distributed_timeout=3"])
  with pytest.raises(cli.UsageError, match="invalid int value"):
    parser.parse_args(["--distributed_timeout_s=x"])

