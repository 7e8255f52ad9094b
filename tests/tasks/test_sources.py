"""SuperGLUE sources: official JSONL parsing, local folders, offline TFDS."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import seqio

import gin
import prompt_tuning_jax.tasks as tasks
from prompt_tuning_jax.tasks import sources

SAMPLES = tasks.SAMPLES_DIR


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch):
  for key in ("data_dir", "tfds_data_dir", "tfds_download"):
    # pylint: disable-next=protected-access
    monkeypatch.setitem(sources._settings, key, None)
  for var in (sources.ENV_DATA_DIR, sources.ENV_TFDS_DATA_DIR,
              sources.ENV_TFDS_DOWNLOAD):
    monkeypatch.delenv(var, raising=False)
  yield
  gin.clear_config()


def _rows(task_folder: str, split_file: str) -> list[dict]:
  with open(SAMPLES / task_folder / split_file, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def _official_copy(tmp_path: Path, folder: str) -> Path:
  """A local folder in the official layout from the bundled samples."""
  task_dir = tmp_path / "SuperGLUE" / folder
  task_dir.mkdir(parents=True)
  shutil.copy(SAMPLES / folder / "train.jsonl", task_dir / "train.jsonl")
  shutil.copy(SAMPLES / folder / "dev32.jsonl", task_dir / "val.jsonl")
  return tmp_path / "SuperGLUE"


def test_malformed_line_names_file_and_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text('{"idx": 0}\n\n{"idx": 1}\n{"idx": 2,, }\n')
  with pytest.raises(sources.SuperGlueDataError,
                     match=r"train\.jsonl:4: malformed"):
    sources.read_jsonl(path)
  path.write_text('{"idx": 0}\n[1, 2]\n')
  with pytest.raises(sources.SuperGlueDataError,
                     match=r":2: expected a JSON object"):
    sources.read_jsonl(path)
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    sources.read_jsonl(tmp_path / "missing.jsonl")


def test_labels_become_tfds_class_indices():
  # The first rows as read by eye: BoolQ false; CB 'contradiction' (dev32);
  # COPA label 1 = choice2 (dev32); WiC true (dev32).
  boolq = sources.convert_rows("boolq", _rows("BoolQ", "train.jsonl")[:1])
  assert boolq[0]["label"] == 0 and boolq[0]["idx"] == 7457
  cb = sources.convert_rows("cb", _rows("CB", "dev32.jsonl")[:1])
  assert cb[0]["label"] == 1
  copa = sources.convert_rows("copa", _rows("COPA", "dev32.jsonl")[:1])
  assert copa[0]["label"] == 1 and copa[0]["question"] == "effect"
  wic = sources.convert_rows("wic", _rows("WiC", "dev32.jsonl")[:1])
  assert wic[0]["label"] == 1 and wic[0]["start2"] == 3
  # Test rows have no label -> -1, as TFDS.
  rte = sources.convert_rows("rte", [{"premise": "p", "hypothesis": "h",
                                      "idx": 5}])
  assert rte[0]["label"] == -1
  with pytest.raises(sources.SuperGlueDataError, match="label 'maybe'"):
    sources.convert_rows("rte", [{"premise": "p", "hypothesis": "h", "idx": 5,
                                  "label": "maybe"}], "x.jsonl")
  with pytest.raises(sources.SuperGlueDataError, match="missing key 'premise'"):
    sources.convert_rows("rte", [{"hypothesis": "h", "idx": 5}], "x.jsonl")


def test_multirc_one_example_per_answer():
  row = _rows("MultiRC", "train.jsonl")[0]
  examples = sources.convert_rows("multirc", [row])
  n_answers = sum(len(q["answers"]) for q in row["passage"]["questions"])
  assert len(examples) == n_answers
  first = examples[0]
  assert first["question"] == ("How does Jason react to the stranger who "
                               "arrives with Susan?")
  assert first["answer"] == "He welcomes him with open arm"
  assert (first["idx/paragraph"], first["idx/question"], first["idx/answer"],
          first["label"]) == (6, 56, 333, 0)


def test_record_entities_and_answers():
  # Row 13 of ReCoRD/train.jsonl (idx 29280): entity spans read by hand are
  # Leon Watson, Peter Roberts (x3), Northampton (x3), Shane Reeves (x2),
  # Roberts; TFDS keeps the sorted set.
  row = [r for r in _rows("ReCoRD", "train.jsonl") if r["idx"] == 29280][0]
  (ex,) = sources.convert_rows("record", [row])
  assert ex["entities"] == ["Leon Watson", "Northampton", "Peter Roberts",
                            "Roberts", "Shane Reeves"]
  assert ex["answers"] == ["Shane Reeves"]
  assert (ex["idx/passage"], ex["idx/query"]) == (29280, 45067)


def test_wsc_fixed_repairs_span_case():
  # "The demonstrators" is not in the text; TFDS wsc.fixed lower-cases it to
  # match the word at span1_index ("the").
  row = _rows("WSC", "train.jsonl")[1]
  (ex,) = sources.convert_rows("wsc", [row])
  assert ex["span1_text"] == "the demonstrators"
  assert ex["span2_text"] == "they" and ex["span2_index"] == 9


@pytest.mark.timeout(60)
def test_local_folder_through_seqio_get_dataset(tmp_path):
  tasks.set_data_dir(_official_copy(tmp_path, "RTE"))
  ds = seqio.get_dataset(
      "superglue_rte_taskless",
      task_feature_lengths={"inputs": 64, "targets": 8},
      feature_converter=seqio.EncDecFeatureConverter(pack=False),
      dataset_split="validation", shuffle=False, batch_size=8)
  batches = list(ds.as_numpy_iterator())
  assert len(batches) == 4  # 32 rows in val.jsonl
  vocab = tasks.get_vocabulary()
  entail = vocab.encode("entailment") + [1]
  for batch in batches:
    assert batch["encoder_input_tokens"].shape == (8, 64)
    assert batch["decoder_target_tokens"].shape == (8, 8)
    assert batch["encoder_input_tokens"].dtype == np.int32
  # dev32 row 1 is 'entailment'; the target is its pieces + EOS, padded.
  first = batches[0]["decoder_target_tokens"][0]
  assert first.tolist()[:len(entail)] == entail
  labels = [r["label"] for r in _rows("RTE", "dev32.jsonl")[:8]]
  n_entail = sum(l == "entailment" for l in labels)
  got = sum(row.tolist()[:len(entail)] == entail
            for row in batches[0]["decoder_target_tokens"])
  assert got == n_entail
  # The encoder input starts with the taskless field name, not 'rte'.
  assert vocab.decode(batches[0]["encoder_input_tokens"][0].tolist()
                      ).startswith("hypothesis: A UFO might have been seen")


@pytest.mark.timeout(60)
def test_env_var_and_gin_select_the_local_folder(tmp_path, monkeypatch):
  root = _official_copy(tmp_path, "CB")
  monkeypatch.setenv(sources.ENV_DATA_DIR, str(root))
  assert sources.get_data_dir() == str(root)
  task = seqio.get_mixture_or_task("superglue_cb")
  assert len(list(task.get_dataset(None, split="train", shuffle=False))) == 32
  monkeypatch.delenv(sources.ENV_DATA_DIR)
  gin.parse_config(f'superglue_data_dir.path = "{root}"')
  assert sources.get_data_dir() == str(root)
  tasks.set_data_dir(tmp_path / "elsewhere")  # Python setting wins.
  assert sources.get_data_dir() == str(tmp_path / "elsewhere")
  with pytest.raises(FileNotFoundError, match=r"elsewhere/CB/val\.jsonl"):
    task.get_dataset(None, split="validation", shuffle=False)


def test_unknown_task_and_split():
  with pytest.raises(ValueError, match="unknown SuperGLUE task 'boolk'"):
    sources.SuperGlueSource("boolk")
  src = sources.SuperGlueSource("axb")
  assert src.splits == ("test",)
  with pytest.raises(ValueError, match="split 'train' not in"):
    src.get_dataset("train")


def test_download_policy_parsing(monkeypatch):
  monkeypatch.setenv(sources.ENV_TFDS_DOWNLOAD, "0")
  assert sources.tfds_download_policy() == "never"
  monkeypatch.setenv(sources.ENV_TFDS_DOWNLOAD, "sometimes")
  with pytest.raises(ValueError, match="PTJ_TFDS_DOWNLOAD='sometimes'"):
    sources.tfds_download_policy()
  with pytest.raises(ValueError, match="expected 'auto'"):
    sources.set_tfds_download("maybe")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["never", "auto"])
def test_offline_tfds_fails_fast(tmp_path, monkeypatch, policy):
  """No prepared data and no network: a clear error in seconds, not minutes."""
  monkeypatch.setattr(sources, "network_reachable", lambda *a, **k: False)
  tasks.set_tfds_data_dir(tmp_path / "empty_tfds")
  tasks.set_tfds_download(policy)
  task = seqio.get_mixture_or_task("superglue_boolq_taskless")
  start = time.monotonic()
  with pytest.raises(sources.SuperGlueDataError) as err:
    task.get_dataset(None, split="validation", shuffle=False)
  assert time.monotonic() - start < 10
  message = str(err.value)
  assert "super_glue/boolq:1.0.2 is not prepared" in message
  assert "tfds build super_glue --config boolq" in message
  assert "PTJ_SUPERGLUE_DIR" in message



@pytest.mark.timeout(60)
@pytest.mark.parametrize("task_name, dataset, fix", [
    ("superglue_rte_taskless", "super_glue/rte:1.0.2", "PTJ_SUPERGLUE_DIR"),
    ("mrqa_squad", "squad/v1.1:3.0.0", "PTJ_SQUAD_DIR"),
    ("mrqa_bioasq", "mrqa/bio_asq:1.0.0", "PTJ_MRQA_DIR"),
])
def test_commands_refuse_unprepared_tfds_before_loading(tmp_path, monkeypatch, task_name, dataset, fix):
  """`cli.check_data` (which train and eval run before any model loads) finds TFDS data that
  is neither prepared nor downloadable, not the first read after the model loaded."""
  from types import SimpleNamespace

  from prompt_tuning_jax import cli
  from prompt_tuning_jax.tasks import mrqa
  monkeypatch.setitem(mrqa._settings, "data_dir", None)  # pylint: disable=protected-access
  monkeypatch.setitem(mrqa._settings, "squad_dir", None)  # pylint: disable=protected-access
  for var in (mrqa.ENV_DATA_DIR, mrqa.ENV_SQUAD_DIR):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setattr(sources, "network_reachable", lambda *a, **k: False)
  tasks.set_tfds_data_dir(tmp_path / "empty_tfds")
  config = SimpleNamespace(mixture_or_task_module=None, mixture_or_task_name=task_name)
  with pytest.raises((sources.SuperGlueDataError, mrqa.MrqaDataError)) as err:
    cli.check_data(config, splits=("validation",))
  message = str(err.value)
  assert f"TFDS dataset {dataset} is not prepared under {tmp_path / 'empty_tfds'}" in message, message
  assert "cannot be reached" in message and fix in message, message
  tasks.set_tfds_download("always")  # a run allowed to download passes the check
  cli.check_data(config, splits=("validation",))

_DIAGNOSTIC_ROWS = {
    "axb": {"sentence1": "s1", "sentence2": "s2", "idx": 0,
            "label": "entailment"},
    "axg": {"premise": "p", "hypothesis": "h", "idx": 0,
            "label": "not_entailment", "pair_id": 1},
}


def _spec_tree(spec):
  if isinstance(spec, dict):
    return {k: _spec_tree(v) for k, v in spec.items()}
  return (spec.dtype.name, tuple(spec.shape.as_list()))


@pytest.mark.timeout(60)
def test_local_rows_match_tfds_feature_structure(tmp_path):
  """Keys, nesting, dtypes and ranks equal TFDS super_glue's own features."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  for task, (config, folder, _) in sources.CONFIGS.items():
    if task in _DIAGNOSTIC_ROWS:
      rows = [_DIAGNOSTIC_ROWS[task]]
    else:
      rows = _rows(folder, "train.jsonl")[:1]
    ds = sources.examples_to_dataset(task, sources.convert_rows(task, rows))
    builder = tfds.builder(f"super_glue/{config}:1.0.2",
                           data_dir=str(tmp_path))
    want = _spec_tree(builder.info.features.get_tensor_spec())
    if task == "axg":  # the official file's Winogender pair ids, kept for gender parity (TFDS drops them)
      want = dict(want, pair_id=("int32", ()))
    assert _spec_tree(ds.element_spec) == want, task
