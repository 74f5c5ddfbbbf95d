"""Each registered frozen-encoder method runs once through the run path on the miniature world; its record's
accuracy is that of the predictor rebuilt from the state the run saved."""

from __future__ import annotations

import pytest

from guidg.backbone import TINY_SPEC, load_backbone
from guidg.checkpoints import load_tensors
from guidg.evaluation import predict
from guidg.methods import METHODS, load_method
from guidg.methods.feature_methods import (
    CLIP_ADAPTER,
    LINEAR_PROBE,
    TIP_ADAPTER,
    TIP_ADAPTER_F,
)
from guidg.presets import get_preset
from guidg.run import PREDICTOR_FILE, RunSpec, attempt
from imagenet_dg.loading import load_task

FEATURE_METHODS = (LINEAR_PROBE, CLIP_ADAPTER, TIP_ADAPTER, TIP_ADAPTER_F)
CONFIG = "a-16shot-seed1"


@pytest.mark.parametrize("method", FEATURE_METHODS, ids=lambda m: m.name)
def test_a_run_records_the_accuracy_of_its_saved_predictor(method, mini_benchmark, mini_releases, tmp_path) -> None:
    assert METHODS[method.name] is method
    roots = dict(mini_releases.paths)
    spec = RunSpec(mini_benchmark, CONFIG, method.name, TINY_SPEC, "smoke", get_preset("smoke"), 1)
    outcome = attempt(spec, roots, tmp_path, device="cpu", export_model=True)
    assert outcome.status == "ran" and outcome.record is not None

    task = load_task(mini_benchmark, CONFIG, roots)
    backbone = load_backbone(TINY_SPEC)
    state, metadata = load_tensors(outcome.folder / PREDICTOR_FILE)
    predictor = load_method(method.name, backbone, task, spec.hparams, state, seed=1)
    logits = predict(predictor, backbone, task.test)
    hits = (logits.argmax(dim=-1).cpu() == logits.new_tensor(task.test.labels).long().cpu()).float()
    assert outcome.record.accuracy == pytest.approx(100.0 * float(hits.mean()))
    assert outcome.record.n_trainable == predictor.n_trainable == int(metadata["n_trainable"])

    again = attempt(spec, roots, tmp_path, device="cpu")
    assert again.status == "done" and again.record.accuracy == outcome.record.accuracy
