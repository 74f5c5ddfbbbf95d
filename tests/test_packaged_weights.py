"""The packaged weights' storage form: mostly-zero tables kept by their non-zero rows, unpacked bit for bit."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from guidg.backbone import TINY_MODEL, BackboneSpec, load_backbone
from guidg.packaged_weights import PACKED_KEY, pack, read_packed, unpack
from guidg.world_pretraining import SPARSE_TABLES, TAG, WEIGHTS_FILE


def test_packing_keeps_only_the_non_zero_rows_and_unpacking_gives_back_the_same_tensors(tmp_path):
    table = torch.zeros(50, 4, dtype=torch.float16)
    table[[3, 17, 40]] = torch.randn(3, 4).to(torch.float16)
    table[17, 0] = 0  # a row with a zero in it is still a present row
    state = {"table": table, "other": torch.arange(6.0).reshape(2, 3)}
    packed, metadata = pack(state, {"note": "x"}, ["table"])
    assert "table" not in packed and packed["table.present_rows"].tolist() == [3, 17, 40]
    assert packed["table.rows"].shape == (3, 4) and PACKED_KEY in metadata

    save_file(packed, str(tmp_path / "w.safetensors"), metadata=metadata)
    back, back_metadata = read_packed(tmp_path / "w.safetensors")
    assert back_metadata == {"note": "x"}
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) and back[k].dtype == state[k].dtype for k in state)
    plain, plain_metadata = unpack(state, {})  # a plain file reads as it is
    assert plain_metadata == {} and plain.keys() == state.keys() and all(plain[k] is state[k] for k in state)


def test_the_packaged_file_is_packed_and_loads_into_the_model_row_for_row():
    stored, metadata = read_packed(WEIGHTS_FILE)
    model = load_backbone(BackboneSpec(TINY_MODEL, TAG)).model
    for name in SPARSE_TABLES:
        loaded = model.state_dict()[name]
        assert torch.equal(loaded, stored[name].float())
        used = loaded.ne(0).any(dim=1)
        assert 0 < int(used.sum()) < loaded.shape[0] // 100  # the captions' tokens only, under 1% of the table
    with safe_open(str(WEIGHTS_FILE), framework="pt") as raw:
        assert PACKED_KEY in raw.metadata() and set(SPARSE_TABLES).isdisjoint(raw.keys())
    assert PACKED_KEY not in metadata and metadata["synthetic"] == "true"
