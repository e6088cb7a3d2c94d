"""Fusion modules: one contract, missing modalities handled explicitly, exact small cases."""

from __future__ import annotations

import pytest
import torch

from moderation.fusion import ConcatFusion, GatedFusion, create_fusion

DIMS = {"image": 5, "text": 3}


@pytest.mark.parametrize("name", ["concat", "gated"])
def test_contract_shapes(name):
    torch.manual_seed(0)
    fusion = create_fusion(name, DIMS, dim=8, dropout=0.0).eval()
    emb = {"image": torch.randn(4, 5), "text": torch.randn(4, 3)}
    present = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    assert fusion(emb, present).shape == (4, 8)


@pytest.mark.parametrize("name", ["concat", "gated"])
def test_absent_modality_content_is_ignored(name):
    """Whatever sits in an absent row (zeros, noise, NaN) must not change the output."""
    torch.manual_seed(0)
    fusion = create_fusion(name, DIMS, dim=8, dropout=0.0).eval()
    text = torch.randn(2, 3)
    present = torch.tensor([[False, True], [False, True]])
    outs = [fusion({"image": img, "text": text}, present)
            for img in (torch.zeros(2, 5), torch.randn(2, 5) * 100, torch.full((2, 5), float("nan")))]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0])
    assert torch.isfinite(outs[0]).all()


def test_concat_uses_learned_placeholder_not_zeros():
    torch.manual_seed(0)
    fusion = ConcatFusion(DIMS, dim=4, dropout=0.0).eval()
    emb = {"image": torch.randn(1, 5), "text": torch.randn(1, 3)}
    present = torch.tensor([[False, True]])
    before = fusion(emb, present)
    with torch.no_grad():
        fusion.placeholder["image"].fill_(3.0)
    assert not torch.allclose(before, fusion(emb, present))


def test_gated_weights_are_zero_for_absent_modalities():
    torch.manual_seed(0)
    fusion = GatedFusion(DIMS, dim=4, dropout=0.0).eval()
    emb = {"image": torch.randn(1, 5), "text": torch.randn(1, 3)}
    only_text = fusion(emb, torch.tensor([[False, True]]))
    # Equivalent by hand: the gate puts weight 1 on the only present modality.
    by_hand = fusion.mlp(fusion.proj["text"](emb["text"]) + fusion.presence(torch.tensor([[0.0, 1.0]])))
    torch.testing.assert_close(only_text, by_hand)


def test_errors():
    with pytest.raises(ValueError, match="unknown fusion 'sum'; known: concat, gated"):
        create_fusion("sum", DIMS)
    with pytest.raises(ValueError, match="unknown modalities"):
        create_fusion("concat", {"audio": 4})
    fusion = GatedFusion(DIMS, dim=4)
    with pytest.raises(ValueError, match="present must be"):
        fusion({"image": torch.zeros(1, 5), "text": torch.zeros(1, 3)}, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="lack modalities"):
        fusion({"text": torch.zeros(1, 3)}, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one present"):
        fusion({"image": torch.zeros(1, 5), "text": torch.zeros(1, 3)}, torch.zeros(1, 2, dtype=torch.bool))
