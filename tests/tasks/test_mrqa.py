"""SQuAD / MRQA tasks (Table 1) on hand-written fixtures in the official formats: text byte for
byte against T5's own `squad` preprocessor, SQuAD-normalised EM/F1 against hand computations
and T5's own qa_utils."""
import gzip
import pathlib

import pytest
import seqio
import tensorflow as tf

import prompt_tuning_jax.tasks  # noqa: F401  (registers the tasks)
from prompt_tuning_jax.tasks import mrqa
from tests import t5_reference

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "testdata" / "mrqa"
SQUAD_FIXTURES = FIXTURES.parent / "squad"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def local_mrqa():
  mrqa.set_data_dir(FIXTURES)
  mrqa.set_squad_dir(SQUAD_FIXTURES)
  yield
  mrqa.set_data_dir(None)
  mrqa.set_squad_dir(None)


def _examples(name, split="validation"):
  ds = seqio.get_mixture_or_task(mrqa.task_name(name)).get_dataset(None, split=split, shuffle=False,
                                                                    num_epochs=1, use_cached=False)
  return list(ds.as_numpy_iterator())


def _t5_squad(rows):
  """T5's own `squad` preprocessor (t5==0.9.4) over rows in TFDS squad's feature layout."""
  t5_pre = t5_reference.preprocessors()
  ds = tf.data.Dataset.from_generator(
      lambda: ({"id": r["qid"], "question": r["question"], "context": r["context"],
                "answers": {"text": r["answers"]}} for r in rows),
      output_signature={"id": tf.TensorSpec([], tf.string), "question": tf.TensorSpec([], tf.string),
                        "context": tf.TensorSpec([], tf.string), "answers": {"text": tf.TensorSpec([None], tf.string)}})
  return list(t5_pre.squad(ds).as_numpy_iterator())


@pytest.mark.parametrize("name,split,path", [
    ("squad", "validation", SQUAD_FIXTURES / "dev-v1.1.json"),
    ("squad", "train", SQUAD_FIXTURES / "train-v1.1.json"),
    ("bioasq", "validation", FIXTURES / "dev" / "BioASQ.jsonl.gz"),
])
def test_text_is_t5_squad_byte_for_byte(local_mrqa, name, split, path):
  """inputs, targets and every gold answer equal T5's `squad` output byte for byte on rows with
  punctuation, runs of tabs/newlines/spaces and non-ASCII text (curly quotes, dashes, accents)."""
  rows = mrqa.read_squad_json(path) if name == "squad" else mrqa.read_official(path)
  ours, theirs = _examples(name, split), _t5_squad(rows)
  assert len(ours) == len(theirs) == len(rows) and len(rows) >= 3
  for o, t in zip(ours, theirs):
    print(f"{name}/{split} {o['qid'].decode()}: {o['inputs_pretokenized'][:90]!r} -> {o['targets_pretokenized']!r}")
    assert o["inputs_pretokenized"] == t["inputs"]
    assert o["targets_pretokenized"] == t["targets"]
    assert list(o["answers"]) == list(t["answers"])
  padded = [o for o in ours if any(ch in o["inputs_pretokenized"] for ch in (b"\t", b"  "))]
  assert not padded, "whitespace runs survived"
  assert any("\u201c".encode() in o["inputs_pretokenized"] for o in ours) or name == "squad" and split == "train"


def test_squad_train_and_dev_rows(local_mrqa):
  train = _examples("squad", "train")
  assert [e["qid"] for e in train] == [b"sq-t1", b"sq-t2", b"sq-t3"]
  assert train[1]["inputs_pretokenized"] == (b"question: Where was the World ' s Fair held ? context: The Eiffel "
                                             b"Tower was completed in 1889 for the World ' s Fair in Paris . ")
  assert train[2]["targets_pretokenized"] == b"U . S . A . "
  dev = _examples("squad")
  assert [e["targets_pretokenized"] for e in dev] == [b"the Atlantic Ocean", b"Brazil , Peru and Colombia",
                                                      "CO\u2082".encode()]


def test_six_out_of_domain_dev_sets_read(local_mrqa):
  first = {n: _examples(n)[0]["targets_pretokenized"] for n in mrqa.OUT_OF_DOMAIN}
  assert first == {"textbookqa": b"glucose", "bioasq": b"beta cells", "race": b"his bicycle was broken",
                   "relationextraction": b"London", "duorc": b"the gardener", "drop": b"14"}
  with pytest.raises(ValueError, match="splits"):
    _examples("bioasq", "train")


def test_padding_decides_the_score(local_mrqa):
  """Against padded gold answers (T5's format) a padded prediction scores F1 100, the raw
  text of the same span 0: why the text must be T5's."""
  task = seqio.get_mixture_or_task("mrqa_squad")
  row = _examples("squad", "train")[2]  # gold "U . S . A . "
  gold = task.postprocess_fn(None, example=row, is_target=True)
  assert mrqa.squad_metric([gold], ["U . S . A . "])["f1"] == 100.0
  assert mrqa.squad_metric([gold], ["U.S.A."])["f1"] == 0.0


def test_squad_em_f1_by_hand_and_against_t5(local_mrqa):
  task = seqio.get_mixture_or_task("mrqa_squad")
  dev = _examples("squad")[:2]
  outputs = ["Atlantic Ocean", "Brazil and Peru"]
  preds = [task.postprocess_fn(o, example=e, is_target=False) for o, e in zip(outputs, dev)]
  targets = [task.postprocess_fn(None, example=e, is_target=True) for e in dev]
  scores = mrqa.squad_metric(targets, preds)
  # 1: "atlantic ocean" == normalised "the Atlantic Ocean": EM 1, F1 1.
  # 2: gold "brazil peru and colombia" (4 tokens) vs "brazil and peru" (3): 3 shared, P 1, R 3/4, F1 6/7; EM 0.
  assert scores["em"] == pytest.approx(50.0)
  assert scores["f1"] == pytest.approx(100 * (1 + 6 / 7) / 2)
  qa = t5_reference.qa_utils()  # T5's metrics.squad: normalise both sides, then qa_metrics
  reference = qa.qa_metrics([[qa.normalize_squad(t) for t in ts] for ts in targets],
                            [qa.normalize_squad(p) for p in preds])
  assert scores["em"] == pytest.approx(reference["em"]) and scores["f1"] == pytest.approx(reference["f1"])


def test_squad_is_tfds_squad_v11_and_selection_is_f1():
  assert mrqa.SQUAD_TFDS == "squad/v1.1:3.0.0"
  from prompt_tuning_jax.paper import experiments
  assert experiments.Setting("squad", "xxl").metric == "f1"  # paper footnote 11
  text = (experiments.REPO_ROOT / "gin" / "paper" / "domain_shift.gin").read_text()
  assert 'EARLY_STOPPING_METRIC = "f1"' in text
  assert 'EARLY_STOPPING_METRIC = "f1"' in (experiments.REPO_ROOT / "gin" / "paper" /
                                           "domain_shift_model_tuning.gin").read_text()


def test_missing_or_broken_file_is_named(tmp_path):
  mrqa.set_data_dir(tmp_path)
  try:
    with pytest.raises(mrqa.MrqaDataError, match="train-v1.1.json not found"):
      mrqa.read_squad_json(tmp_path / "train-v1.1.json")
    (tmp_path / "dev-v1.1.json").write_text('{"data": [{"paragraphs": [{"qas": [{"id": 1}]}]}]}')
    with pytest.raises(mrqa.MrqaDataError, match="dev-v1.1.json: not an official SQuAD v1.1 file"):
      mrqa.read_squad_json(tmp_path / "dev-v1.1.json")
    with pytest.raises(mrqa.MrqaDataError, match="SQuAD.jsonl.gz not found"):
      mrqa.read_official(tmp_path / "dev" / "SQuAD.jsonl.gz")
    (tmp_path / "dev").mkdir()
    with gzip.open(tmp_path / "dev" / "DROP.jsonl.gz", "wt") as f:
      f.write('{"header": {}}\n{"context": "x"}\n')
    with pytest.raises(mrqa.MrqaDataError, match=r"DROP.jsonl.gz:2: not an MRQA context record"):
      mrqa.read_official(tmp_path / "dev" / "DROP.jsonl.gz")
  finally:
    mrqa.set_data_dir(None)


GOOD = b'{"context": "c", "qas": [{"qid": "q1", "question": "q?", "answers": ["a"]}]}\n'


@pytest.mark.parametrize("body,where", [
    (b'{"header": {}}\n\n' + GOOD + b'{"context": "c", "qas": [\n', ":4: malformed JSON"),  # physical line
    (b'{"header": {}}\n' + GOOD.replace(b'"q?"', b'7'), ":2: each of 'qas' needs"),
    (b'{"header": {}}\n' + GOOD.replace(b'["a"]', b'"a"'), ":2: each of 'qas' needs"),
    (b'{"header": {}}\n' + GOOD.replace(b'"qid": "q1", ', b''), ":2: each of 'qas' needs"),
    (b'{"header": {}}\n' + GOOD.replace(b'"c"', b'["c"]', 1), ":2: not an MRQA context record"),
    (b'{"header": {}}\n[1, 2]\n', ":2: expected a JSON object"),
    (b'{"header": {}}\n{"context": "\xff"}\n', ":2: not UTF-8"),
    (b'', "empty|no questions"),
])
def test_malformed_rows_are_refused_naming_file_and_line(tmp_path, body, where):
  path = tmp_path / "RACE.jsonl.gz"
  with gzip.open(path, "wb") as f:
    f.write(body)
  with pytest.raises(mrqa.MrqaDataError, match=f"RACE.jsonl.gz({where})" if where.startswith(":") else where):
    mrqa.read_official(path)
