"""MRQA tasks (Table 1) on hand-written fixtures in the official .jsonl.gz format, and
SQuAD-normalised EM/F1 against hand computations and T5's own qa_utils."""
import gzip
import pathlib

import pytest
import seqio

import prompt_tuning_jax.tasks  # noqa: F401  (registers the tasks)
from prompt_tuning_jax.tasks import mrqa
from tests import t5_reference

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "testdata" / "mrqa"
pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def local_mrqa():
  mrqa.set_data_dir(FIXTURES)
  yield
  mrqa.set_data_dir(None)


def _examples(name, split="validation"):
  ds = seqio.get_mixture_or_task(mrqa.task_name(name)).get_dataset(None, split=split, shuffle=False,
                                                                    num_epochs=1, use_cached=False)
  return list(ds.as_numpy_iterator())


def test_squad_train_and_dev_in_t5_text_format(local_mrqa):
  train = _examples("squad", "train")
  assert [e["qid"] for e in train] == [b"sq-t1", b"sq-t2", b"sq-t3"]
  assert train[1]["inputs_pretokenized"] == (b"question: Where was the World's Fair held? context: The Eiffel "
                                             b"Tower was completed in 1889 for the World's Fair in Paris.")
  assert train[1]["targets_pretokenized"] == b"Paris" and list(train[1]["answers"]) == [b"Paris", b"in Paris"]
  dev = _examples("squad")
  assert [e["targets_pretokenized"] for e in dev] == [b"the Atlantic Ocean", b"Brazil, Peru and Colombia"]


def test_six_out_of_domain_dev_sets_read(local_mrqa):
  first = {n: _examples(n)[0]["targets_pretokenized"] for n in mrqa.OUT_OF_DOMAIN}
  assert first == {"textbookqa": b"glucose", "bioasq": b"beta cells", "race": b"his bicycle was broken",
                   "relationextraction": b"London", "duorc": b"the gardener", "drop": b"14"}
  with pytest.raises(ValueError, match="splits"):
    _examples("bioasq", "train")


def test_squad_em_f1_by_hand_and_against_t5(local_mrqa):
  task = seqio.get_mixture_or_task("mrqa_squad")
  dev = _examples("squad")
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


def test_missing_or_broken_file_is_named(tmp_path):
  mrqa.set_data_dir(tmp_path)
  try:
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
