"""Gradient magnitudes recorded during training (paper Fig. 7)."""

import json

import pytest
import torch

from stochdepth.analysis.gradients import GradientRecorder
from stochdepth.train.run_folder import RunFolder
from stochdepth.train.trainer import train


@pytest.mark.parametrize(("rule", "expect_dropped"), [("none", False), ("uniform", True)])
def test_records_every_n_iterations_with_nulls_only_for_dropped_blocks(tmp_path, tiny_config, rule, expect_dropped):
    config = tiny_config.override(survival_rule=rule, final_survival_prob=0.3, record_gradients_every=2)
    train(config, out=tmp_path / "run")
    records = RunFolder(tmp_path / "run").read_records(RunFolder(tmp_path / "run").gradients)
    assert [record["iteration"] for record in records] == list(range(2, 25, 2))
    assert all(record["stem"] > 0 and len(record["blocks"]) == 3 for record in records)
    values = [value for record in records for value in record["blocks"]]
    assert any(value is None for value in values) == expect_dropped
    assert all(value > 0 for value in values if value is not None)


def test_recorder_reads_mean_absolute_gradient_and_none_for_a_block_without_one():
    import stochdepth

    model = stochdepth.create_model("resnet8", survival_rule="none")
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    recorder = GradientRecorder(model)
    model.blocks[1].branch[0].weight.grad = None
    measured = recorder.measure()
    assert measured["stem"] == pytest.approx(model.stem[0].weight.grad.abs().mean().item())
    assert measured["blocks"][0] == pytest.approx(model.blocks[0].branch[0].weight.grad.abs().mean().item())
    assert measured["blocks"][1] is None


def test_resume_keeps_only_the_gradient_records_its_checkpoint_knows(tmp_path):
    folder = RunFolder(tmp_path)
    folder.gradients.write_text(
        "".join(json.dumps({"iteration": i, "stem": 1.0, "blocks": []}) + "\n" for i in (5, 10, 15))
    )
    folder.metrics.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 2, 3)))
    folder.keep_records(evaluations=2, iteration=10)
    assert [record["iteration"] for record in folder.read_records(folder.gradients)] == [5, 10]
    assert [record["epoch"] for record in folder.read_metrics()] == [1, 2]
