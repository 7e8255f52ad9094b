"""Every generated bad input is refused naming its file and key or line; every good one
loads equal to the original (tests/fuzz/cases*.py build them)."""
import cases
import cases_data  # noqa: F401  (registers its cases)
import cases_entries  # noqa: F401
import cases_more  # noqa: F401
import cases_readers  # noqa: F401
import pytest


def test_there_are_at_least_220_cases():  # 228 with issue 19's: a case module dropped from the imports fails here
  assert len(cases.CASES) >= 220


@pytest.mark.parametrize("name", sorted(cases.CASES))
def test_case(name, tmp_path):
  assert cases.run_case(name, tmp_path / "case") in ("refused", "loaded")
