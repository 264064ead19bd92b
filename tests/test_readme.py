"""The README's Python snippets for time schedules and language models run as written and do what they say."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _snippet_after(marker: str) -> str:
    """The first ```python block after ``marker`` in the README."""
    start = README.index(marker)
    return re.search(r"```python\n(.*?)```", README[start:], re.DOTALL).group(1)


def test_the_time_schedule_snippet_runs_and_nothing_is_dropped_before_the_late_fraction():
    namespace = {}
    exec("import stochdepth\n" + _snippet_after("**Survival schedules over training time.**"), namespace)
    model, stochdepth = namespace["model"], namespace["stochdepth"]
    assert stochdepth.survival_probs_in_force(model) == [1.0] * 27
    assert min(stochdepth.survival_probs(model)) == pytest.approx(0.5)


def test_the_language_model_snippet_runs_and_gates_each_layers_two_branches():
    pytest.importorskip("transformers", minversion="5")
    namespace = {}
    exec(_snippet_after("## Language models"), namespace)
    assert len(namespace["stochdepth"].survival_probs(namespace["model"])) == 6
