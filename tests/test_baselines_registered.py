"""Each registered baseline runs once through the run path on the miniature world: its record's accuracy is that
of the predictor rebuilt from the state the run saved (through the method's own image encoder where it has one),
its record names its rule and parameter count, and a rerun reads the record back."""

from __future__ import annotations

import pytest

from guidg.backbone import TINY_SPEC, load_backbone
from guidg.checkpoints import load_tensors
from guidg.evaluation import predict
from guidg.methods import METHODS, load_method
from guidg.methods.clip_lora import CLIP_LORA
from guidg.methods.cocoop import COCOOP
from guidg.methods.feature_methods import CLIP_ADAPTER, LINEAR_PROBE, TIP_ADAPTER, TIP_ADAPTER_F
from guidg.methods.maple import MAPLE
from guidg.pooled_training import CHECKPOINT_FILE
from guidg.presets import get_preset
from guidg.run import PREDICTOR_FILE, RunSpec, attempt
from imagenet_dg.loading import load_task

BASELINES = (LINEAR_PROBE, COCOOP, MAPLE, CLIP_ADAPTER, TIP_ADAPTER, TIP_ADAPTER_F, CLIP_LORA)
CHANGE_THE_IMAGE_ENCODER = {MAPLE.name, CLIP_LORA.name}
CONFIG = "a-16shot-seed1"
RUN_PHASES = {"load", "fit", "evaluate"}
"""The phases the runner times itself."""


@pytest.mark.parametrize("method", BASELINES, ids=lambda m: m.name)
def test_a_run_records_the_accuracy_of_its_saved_predictor(method, mini_benchmark, mini_releases, tmp_path) -> None:
    assert METHODS[method.name] is method
    roots = dict(mini_releases.paths)
    spec = RunSpec(mini_benchmark, CONFIG, method.name, TINY_SPEC, "smoke", get_preset("smoke"), 1)
    outcome = attempt(spec, roots, tmp_path, device="cpu", export_model=True)
    assert outcome.status == "ran" and outcome.record is not None
    assert not (outcome.folder / CHECKPOINT_FILE).exists()  # any resumable training state is cleared
    assert set(outcome.record.phase_seconds) - RUN_PHASES  # the method's own phases are recorded too

    task = load_task(mini_benchmark, CONFIG, roots)
    backbone = load_backbone(TINY_SPEC)
    state, metadata = load_tensors(outcome.folder / PREDICTOR_FILE)
    predictor = load_method(method.name, backbone, task, spec.hparams, state, seed=1)
    assert predictor.changes_image_encoder == (method.name in CHANGE_THE_IMAGE_ENCODER)
    logits = predict(predictor, backbone, task.test)
    hits = (logits.argmax(dim=-1).cpu() == logits.new_tensor(task.test.labels).long().cpu()).float()
    assert outcome.record.accuracy == pytest.approx(100.0 * float(hits.mean()))
    assert outcome.record.n_trainable == predictor.n_trainable == int(metadata["n_trainable"])
    assert outcome.record.model_selection == method.selection_of(spec.hparams)

    again = attempt(spec, roots, tmp_path, device="cpu")
    assert again.status == "done" and again.record.accuracy == outcome.record.accuracy
