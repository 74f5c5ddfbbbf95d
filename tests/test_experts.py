"""GuiDG step 1: one prompt expert per source domain, saved and reused."""

from __future__ import annotations

import torch

from guidg.experts import ExpertStore, stack_text_features, train_experts
from guidg.presets import get_preset

CONFIG = get_preset("smoke").prompt


def test_one_expert_per_source_domain_in_source_order(mini_task, tiny_backbone) -> None:
    experts = train_experts(tiny_backbone, mini_task, CONFIG, seed=1)
    assert [e.domain for e in experts] == list(mini_task.sources)
    stacked = stack_text_features(experts)
    assert stacked.shape == (3, len(mini_task.class_ids), tiny_backbone.embed_dim)


def test_experts_reduce_their_training_loss(mini_task, tiny_backbone) -> None:
    for expert in train_experts(tiny_backbone, mini_task, CONFIG, seed=1):
        losses = [h["loss"] for h in expert.record["history"]]
        assert losses[-1] < losses[0], expert.domain


def test_experts_of_different_domains_differ(mini_task, tiny_backbone) -> None:
    experts = train_experts(tiny_backbone, mini_task, CONFIG, seed=1)
    assert not torch.allclose(experts[0].text_features, experts[1].text_features)


def test_a_saved_expert_is_reused_instead_of_retrained(mini_task, tiny_backbone, tmp_path) -> None:
    store = ExpertStore(tmp_path)
    first = train_experts(tiny_backbone, mini_task, CONFIG, seed=1, store=store)
    folders = sorted(p for p in tmp_path.iterdir())
    assert len(folders) == 3 and all((f / "expert.safetensors").is_file() and (f / "expert.json").is_file() for f in folders)
    stamps = [(f / "expert.safetensors").stat().st_mtime_ns for f in folders]
    again = train_experts(tiny_backbone, mini_task, CONFIG, seed=1, store=store)
    assert [(f / "expert.safetensors").stat().st_mtime_ns for f in folders] == stamps
    for a, b in zip(first, again):
        assert torch.equal(a.text_features, b.text_features) and a.record["key"] == b.record["key"]


def test_another_seed_is_another_expert(mini_task, tiny_backbone, tmp_path) -> None:
    store = ExpertStore(tmp_path)
    train_experts(tiny_backbone, mini_task, CONFIG, seed=1, store=store)
    train_experts(tiny_backbone, mini_task, CONFIG, seed=2, store=store)
    assert len(list(tmp_path.iterdir())) == 6
