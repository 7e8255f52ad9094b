"""The eval and infer entry points, run in-process on a tiny random T5 ('random:0')."""
import json

import numpy as np
import pytest
import seqio

import gin
from prompt_tuning_jax import eval as eval_cli
from prompt_tuning_jax import infer

RTE = "superglue_rte_sample_taskless"
CB = "superglue_cb_sample_taskless"
TINY = ["--gin.T5Config.emb_dim=16", "--gin.T5Config.num_heads=2", "--gin.T5Config.head_dim=8",
        "--gin.T5Config.mlp_dim=32", "--gin.T5Config.num_encoder_layers=1",
        "--gin.T5Config.num_decoder_layers=1", "--gin.T5Config.dtype='float32'",
        "--gin.CHECKPOINT_PATH=random:0"]
DATA = ["--gin.TASK_FEATURE_LENGTHS={'inputs': 48, 'targets': 6}", "--gin.BATCH_SIZE=16"]
pytestmark = pytest.mark.timeout(400)


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture
def prompts(tmp_path):
  paths = []
  for i in range(2):
    path = tmp_path / f"p{i}.npy"
    np.save(path, np.random.RandomState(i).normal(size=(4, 16)).astype(np.float32))
    paths.append(str(path))
  return paths


def _read(path):
  return [json.loads(line) for line in open(path)]


@pytest.mark.slow
def test_eval_ensemble_greedy(tmp_path, prompts, capsys):
  results = eval_cli.main(TINY + DATA + [f"--gin.MIXTURE_OR_TASK_NAME={RTE}", f"--prompt={prompts[0]}",
                                         f"--prompt={prompts[1]}", "--mode=greedy",
                                         f"--output_dir={tmp_path}"])
  progress = [l for l in capsys.readouterr().err.splitlines() if l.startswith("[eval ")]
  assert "reading the frozen model random:0 with 2 prompt(s)" in progress[0], progress  # as it goes, on stderr
  assert f"evaluating {RTE} (split 'validation', mode greedy)" in progress[1], progress
  first = min(k for k, v in results[RTE].items() if isinstance(v, (int, float)))
  assert f"{RTE}: done: {first} {results[RTE][first]:.4g}" in progress[-1], progress
  scores = results[RTE]
  for key in ("member_0/accuracy", "member_1/accuracy", "vote/accuracy", "average/accuracy",
              "vote/invalid_rate"):
    assert key in scores
  records = _read(tmp_path / f"{RTE}.ensemble.predictions.jsonl")
  for r in records:  # averaging rescoring picks one of the members' outputs
    assert r["average"] in [m["output"] for m in r["members"]]
    assert r["vote"] in [m["output"] for m in r["members"]]


@pytest.mark.slow
def test_eval_mixture_with_a_prompt_per_task(tmp_path, prompts):
  name = "test_eval_cli_rte_cb"
  if name not in seqio.MixtureRegistry.names():
    import prompt_tuning_jax.tasks as tasks  # noqa: F401  (registers the sample tasks)
    seqio.MixtureRegistry.add(name, [RTE, CB], default_rate=1.0)
  mixture = TINY + DATA + [f"--gin.MIXTURE_OR_TASK_NAME={name}", f"--prompt={RTE}={prompts[0]}"]
  with pytest.raises(SystemExit, match="no --prompt=TASK=PATH"):
    eval_cli.main(mixture + [f"--prompt=other={prompts[1]}"])
  gin.clear_config()
  out = tmp_path / "eval"
  results = eval_cli.main(mixture + [f"--prompt={CB}={prompts[1]}", "--mode=rank", f"--output_dir={out}"])
  assert set(results) == {RTE, CB}
  for task, labels in ((RTE, {"entailment", "not_entailment"}), (CB, {"entailment", "contradiction", "neutral"})):
    summary = json.load(open(out / f"{task}.metrics.json"))
    records = _read(out / f"{task}.predictions.jsonl")
    assert summary["mode"] == "rank" and summary["prompt_id"] == (0 if task == RTE else 1)
    assert len(records) == 32 and {r["output"] for r in records} <= labels
    accuracy = 100.0 * np.mean([r["output"] == r["targets"] for r in records])
    assert results[task]["accuracy"] == pytest.approx(accuracy)
    assert results[task]["invalid_rate"] == 0.0
  assert "T5Config.emb_dim = 16" in (out / "config.gin").read_text()


def test_infer_jsonl_several_prompts_and_per_line_prompt(tmp_path, prompts):
  src = tmp_path / "in.jsonl"
  lines = [{"inputs": "hypothesis: a cat. premise: a cat sat."}, {"inputs": "the dog barks"},
           {"inputs": "the dog barks", "prompt": "b"}, {"inputs": "the dog barks", "prompt": 0}]
  src.write_text("".join(json.dumps(x) + "\n" for x in lines))
  dst = tmp_path / "out.jsonl"
  infer.main(TINY + [f"--input_file={src}", f"--output_file={dst}", f"--prompt=a={prompts[0]}",
                     f"--prompt=b={prompts[1]}", "--mode=beam", "--num_beams=2", "--input_length=16",
                     "--max_decode_length=5", "--batch_size=4"])
  out = _read(dst)
  assert [o["input"] for o in out] == [x["inputs"] for x in lines]
  assert [[p["prompt"] for p in o["outputs"]] for o in out] == [["a", "b"], ["a", "b"], ["b"], ["a"]]
  both = {p["prompt"]: p for p in out[1]["outputs"]}
  for own, prompt in ((out[2], "b"), (out[3], "a")):  # same text in a different batch mix
    assert own["outputs"][0]["output"] == both[prompt]["output"]
    assert own["outputs"][0]["score"] == pytest.approx(both[prompt]["score"], abs=1e-5)
    assert len(own["outputs"][0]["beams"]) == 2


def test_infer_reads_tsv_first_column(tmp_path):
  src = tmp_path / "in.tsv"
  src.write_text("first input\tignored\nsecond input\n\n")
  assert infer.read_inputs(str(src)) == [("first input", None), ("second input", None)]
  with pytest.raises(SystemExit, match="no field 'text'"):
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"inputs": "x"}\n')
    infer.read_inputs(str(bad), input_field="text")
  with pytest.raises(SystemExit, match="neither a --prompt NAME"):
    infer.requests([("x", "c")], ["a", "b"])


def test_eval_refuses_an_unknown_macro_before_loading(monkeypatch):
  from prompt_tuning_jax.evaluators import driver

  def refuse(*_, **__):
    raise AssertionError("model/data work started before the gin flags were checked")
  monkeypatch.setattr(driver, "evaluate", refuse)
  with pytest.raises(SystemExit, match="--gin.CHECKPOINT_PATHS: unknown gin macro.*closest known: CHECKPOINT_PATH"):
    eval_cli.main(TINY[:-1] + ["--gin.CHECKPOINT_PATHS=random:0", f"--gin.MIXTURE_OR_TASK_NAME={RTE}"])
  gin.clear_config()
  with pytest.raises(SystemExit, match="--gin.EvalConfig.mdoe: .*closest known: mode"):
    eval_cli.main(TINY + ["--gin.EvalConfig.mdoe='rank'"])


def test_eval_config_is_bound_from_gin_and_flags(monkeypatch, prompts):
  """runs/eval.gin maps the training macros onto EvalConfig; flags override gin."""
  from prompt_tuning_jax.evaluators import driver
  seen = []
  monkeypatch.setattr(driver, "evaluate", lambda cfg, placement=None, progress=False: seen.append(cfg) or {})
  eval_cli.main(["--gin_file=models/t5_1_1_small.gin", f"--gin.MIXTURE_OR_TASK_NAME={RTE}", "--gin.BATCH_SIZE=4",
                 "--gin.EvalConfig.num_beams=3", "--gin.EvalConfig.mode='beam'", "--mode=rank",
                 f"--prompt={prompts[0]}"])
  cfg = seen[0]
  assert (cfg.mode, cfg.num_beams, cfg.data.batch_size, cfg.data.mixture_or_task_name) == ("rank", 3, 4, RTE)
  assert cfg.model.checkpoint_path == "gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_small/checkpoint_1100000"
  assert cfg.model.t5.emb_dim == 512 and cfg.model.prompts == (prompts[0],)
