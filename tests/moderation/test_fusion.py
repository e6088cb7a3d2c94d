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


def test_late_fusion_caps_the_image_and_handles_missing_modalities():
    from moderation.model import LateFusionClassifier
    torch.manual_seed(0)
    head = LateFusionClassifier({"image": 5, "text": 3}, num_categories=2, hidden=4, dropout=0.0,
                                image_weight_cap=0.3).eval()
    head.image_weight.fill_(10.0)  # set beyond the cap: the cap wins
    emb = {"image": torch.randn(3, 5), "text": torch.randn(3, 3)}
    present = torch.tensor([[True, True], [True, False], [False, True]])
    uni = head.unimodal(emb)
    out = head(emb, present)
    torch.testing.assert_close(out[0], uni["text"][0] + 0.3 * uni["image"][0])
    torch.testing.assert_close(out[1], uni["image"][1])  # image only
    torch.testing.assert_close(out[2], uni["text"][2])   # text only: the image row is ignored
    nan_image = {"image": torch.full((3, 5), float("nan")), "text": emb["text"]}
    torch.testing.assert_close(head(nan_image, torch.tensor([[False, True]] * 3))[2], out[2])
    lexical = torch.ones(3, 2)
    head.lexical_weight.fill_(2.0)
    torch.testing.assert_close(head(emb, present, lexical)[2], uni["text"][2] + 2.0)
    with pytest.raises(ValueError, match="at least one present modality"):
        head(emb, torch.tensor([[False, False]] * 3))


def test_the_head_runs_in_fp32_under_bf16_autocast(tiny_model_dir):
    """Under bf16 autocast only the encoders run in bf16: the head's inputs and matmuls stay fp32 (its bf16
    rounding was up to half of bf16's logit error on the default model, which sets bf16-guarded's margins)."""
    from moderation.model import collate
    from moderation.scorer import Scorer

    scorer = Scorer.from_dir(tiny_model_dir, ocr="off", detect_language=False)
    model = scorer.model
    batch = collate(scorer.prepare_many([{"id": "a", "text": "you people are the worst"},
                                         {"id": "b", "text": "lovely weather"}]), model)
    seen: dict[str, list] = {"head": [], "encoder": []}

    def record(part):
        return lambda mod, inp, out: seen[part].append(out.dtype)

    hooks = [m.register_forward_hook(record(part)) for part, module in (("head", model.head),
                                                                      ("encoder", model.encoders["text"]))
             for m in module.modules() if isinstance(m, torch.nn.Linear)]
    with torch.inference_mode(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = model(batch)
        encoded = model.embed(batch)
    for h in hooks:
        h.remove()
    assert seen["head"] and set(seen["head"]) == {torch.float32} and out.dtype == torch.float32
    assert set(seen["encoder"]) == {torch.bfloat16}  # the encoder's matmuls did run in bf16
    with torch.inference_mode():
        want = model.head({m: e.float() for m, e in encoded.items()}, batch["present"],
                          *([batch["lexical"]] if model.config.lexical else []))
    assert torch.allclose(out, want, atol=1e-6)
