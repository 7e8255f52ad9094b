"""SuperGLUE leaderboard files from `eval --split=test` on the test-format fixture
(tests/testdata/superglue_test, derived from the bundled dev32 rows, labels -1)."""
import json
import pathlib
import zipfile

import pytest

from prompt_tuning_jax import eval as eval_cmd
from prompt_tuning_jax.demo import DEMO_CHECKPOINT
from prompt_tuning_jax.evaluators import submission, superglue_metrics
from prompt_tuning_jax.tasks import sources

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "testdata" / "superglue_test"
pytestmark = pytest.mark.timeout(900)


def _rows(path):
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


@pytest.mark.slow
def test_eval_split_test_writes_the_leaderboard_layout(tmp_path):
  sources.set_data_dir(FIXTURE)
  try:
    eval_cmd.main(["--gin_file=models/demo.gin", f"--gin.CHECKPOINT_PATH={DEMO_CHECKPOINT}",
                   "--gin.MIXTURE_OR_TASK_NAME=superglue_submission_taskless", "--split=test",
                   "--batch_size=8", f"--output_dir={tmp_path}"])
  finally:
    sources.set_data_dir(None)
  out = tmp_path / "submission"
  names = ["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl", "RTE.jsonl", "WiC.jsonl",
           "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"]  # the leaderboard's expected file names
  assert sorted(p.name for p in out.iterdir()) == sorted(names + ["superglue.zip"])
  with zipfile.ZipFile(out / "superglue.zip") as archive:  # one upload: every file, flat
    assert archive.namelist() == names
    assert all(archive.read(n) == (out / n).read_bytes() for n in names)
  for folder, labels in (("BoolQ", {"true", "false"}), ("CB", {"entailment", "contradiction", "neutral"}),
                         ("COPA", {0, 1}), ("RTE", {"entailment", "not_entailment"}), ("WiC", {"true", "false"}),
                         ("WSC", {"True", "False"})):
    rows = _rows(out / f"{folder}.jsonl")
    assert [r["idx"] for r in rows] == [r["idx"] for r in _rows(FIXTURE / folder / "test.jsonl")]
    assert {r["label"] for r in rows} <= labels
  for name in ("AX-b", "AX-g"):
    assert [r["idx"] for r in _rows(out / f"{name}.jsonl")] == [r["idx"] for r in _rows(FIXTURE / name / f"{name}.jsonl")]
  multirc, fixture = _rows(out / "MultiRC.jsonl"), _rows(FIXTURE / "MultiRC" / "test.jsonl")
  assert [p["idx"] for p in multirc] == [p["idx"] for p in fixture]
  assert [[a["idx"] for q in p["passage"]["questions"] for a in q["answers"]] for p in multirc] == \
      [[a["idx"] for q in p["passage"]["questions"] for a in q["answers"]] for p in fixture]
  record = _rows(out / "ReCoRD.jsonl")
  assert [r["idx"] for r in record] == [str(q["idx"]) for p in _rows(FIXTURE / "ReCoRD" / "test.jsonl")
                                        for q in p["qas"]]  # a string, as jiant's writer
  assert all(isinstance(r["label"], str) for r in record)
  # every predictions row carries its source idx; AX-g reports gender parity over its pairs
  preds = _rows(tmp_path / "superglue_axg_taskless.predictions.jsonl")
  assert [p["idx"] for p in preds] == [r["idx"] for r in _rows(FIXTURE / "AX-g" / "AX-g.jsonl")]
  summary = json.loads((tmp_path / "superglue_axg_taskless.metrics.json").read_text())
  axg = [r["label"] for r in _rows(out / "AX-g.jsonl")]
  want = 100.0 * sum(axg[2 * i] == axg[2 * i + 1] for i in range(2)) / 2  # pairs (0, 1) and (2, 3)
  assert summary["submission"]["gender_parity"] == want


def test_gender_parity_by_hand():
  assert superglue_metrics.gender_parity([0, 0, 1, 1, 2, 2], ["a", "a", "a", "b", "b", "b"]) == pytest.approx(200 / 3)
  with pytest.raises(ValueError, match="equal"):
    superglue_metrics.gender_parity([0], [])


def test_leaderboard_rows_map_invalid_outputs_to_a_label_and_count_them():
  exs = [{"idx": 3}, {"idx": 7}]
  rows, invalid = submission.leaderboard_rows("wsc", exs, [1, -1])
  assert rows == [{"idx": 3, "label": "True"}, {"idx": 7, "label": "False"}] and invalid == 1
  assert submission.task_key("superglue_axg_taskless") == "axg" and submission.task_key("glue_qqp_taskless") is None


def test_record_idx_is_a_string_and_the_zip_holds_what_is_written(tmp_path):
  rows, invalid = submission.leaderboard_rows("record", [{"idx/query": 12}, {"idx/query": 3}],
                                              [{"text": "Paris"}, {"text": "Olimpija Ljubljana"}])
  assert rows == [{"idx": "12", "label": "Paris"}, {"idx": "3", "label": "Olimpija Ljubljana"}] and invalid == 0
  summary = submission.write_submission(str(tmp_path), "superglue_record_taskless", [{"idx/query": 12}],
                                        [{"text": "Paris"}])
  assert (tmp_path / "ReCoRD.jsonl").read_text() == '{"idx": "12", "label": "Paris"}\n'
  submission.write_submission(str(tmp_path), "superglue_rte", [{"idx": 0}], [1])
  with zipfile.ZipFile(summary["zip"]) as archive:
    assert archive.namelist() == ["ReCoRD.jsonl", "RTE.jsonl"]
    assert archive.read("RTE.jsonl") == b'{"idx": 0, "label": "not_entailment"}\n'
