"""Gradient magnitudes recorded during training (paper Fig. 7)."""

import json

import pytest
import torch

from stochdepth.train import train
from stochdepth.train.gradients import GradientRecorder
from stochdepth.train.run_folder import METRIC_KEYS, RunFolder


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


def test_recorder_reads_mean_absolute_gradient_and_none_for_a_block_that_did_not_run():
    import stochdepth

    model = stochdepth.create_model("resnet8", survival_rule="uniform", final_survival_prob=0.5, gate_seed=1)
    recorder = GradientRecorder(model, model.gate_generator)
    for _ in range(20):
        model.zero_grad(set_to_none=False)
        model(torch.randn(2, 3, 8, 8)).sum().backward()
        survives = model.gate_generator.step.survives
        if not all(survives) and any(survives):
            break
    measured = recorder.measure()
    assert measured["stem"] == pytest.approx(model.stem[0].weight.grad.abs().mean().item())
    for block, ran, value in zip(model.blocks, survives, measured["blocks"]):
        if ran:
            assert value == pytest.approx(block.branch[0].weight.grad.abs().mean().item()) and value > 0
        else:
            assert value is None


def test_resume_keeps_only_the_gradient_records_its_checkpoint_knows(tmp_path):
    folder = RunFolder(tmp_path)
    folder.gradients.write_text(
        "".join(json.dumps({"iteration": i, "stem": 1.0, "blocks": []}) + "\n" for i in (5, 10, 15))
    )
    records = [{**dict.fromkeys(METRIC_KEYS, 0.0), "epoch": epoch} for epoch in (1, 2, 3)]
    folder.metrics.write_text("".join(json.dumps(record) + "\n" for record in records))
    folder.keep_records(evaluations=2, iteration=10)
    assert [record["iteration"] for record in folder.read_records(folder.gradients)] == [5, 10]
    assert [record["epoch"] for record in folder.read_metrics()] == [1, 2]
