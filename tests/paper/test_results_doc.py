"""docs/RESULTS.md is what `python -m prompt_tuning_jax.paper.results_doc` writes: the test
fails when the committed file is stale (rerun the command, commit the file)."""
import pathlib

from prompt_tuning_jax.paper import experiments, results_doc

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "RESULTS.md"


def test_committed_results_md_is_what_the_command_writes():
  want = results_doc.render()
  got = DOC.read_text(encoding="utf-8")
  assert got == want, "docs/RESULTS.md is stale: run `python -m prompt_tuning_jax.paper.results_doc` and commit it"


def test_check_flag_reports_stale_and_fresh(tmp_path, capsys):
  out = tmp_path / "RESULTS.md"
  assert results_doc.main([f"--out={out}"]) == 0
  assert results_doc.main([f"--out={out}", "--check"]) == 0
  out.write_text(out.read_text().replace("| 90.5 |", "| 90.6 |", 1))
  assert results_doc.main([f"--out={out}", "--check"]) == 1
  assert "stale" in capsys.readouterr().out


def test_paper_cells_are_as_printed_and_counts_come_from_the_grid():
  text = results_doc.render()
  assert "| xxl (paper) | 91.1 | 99.3 / 99.0 | 98.8 | 65.7 / 88.7 | 92.7 / 93.4 | 92.6 | 76.2 | 95.8 | 90.5 |" in text
  assert "| xxl | cb |  |  |  | 99.3 / 99.0 | 100.00 / 100.00 | 100.0 / 100.0 |" in text
  assert "| QQP -> MRPC | xxl | model tuning |  |  | 73.1 ± 0.9 | 81.2 ± 2.1 | 0/3 |" in text
  assert "99.2" not in text and "93.0 |" not in text  # no derived mean shown as a paper cell
  for name, exp in experiments.EXPERIMENTS.items():
    if not exp.hidden:
      assert f"| `{name}` | {exp.reproduces} | {len(experiments.expand(exp, '/tmp/x'))}" in text
