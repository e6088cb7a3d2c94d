"""The real packaged pretrained weights behave as pretrained models should."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.pretrained


def test_minilm_paraphrases_closer_than_unrelated():
    from moderation.encoders import create_text_encoder
    enc = create_text_encoder("all-MiniLM-L6-v2")
    assert enc.output_dim == 384
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell sharply today."]
    tokens = enc.tokenize(texts)
    with torch.inference_mode():
        emb = torch.nn.functional.normalize(enc(**tokens), dim=-1)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.6, sim
    assert sim[0, 1] > sim[0, 2] + 0.4 and sim[1, 2] < 0.2, sim


def test_efficientnet_lite0_sees_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    from moderation.encoders.image import efficientnet_lite0_imagenet_state_dict
    import timm
    from moderation.encoders.image import build_transform
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(efficientnet_lite0_imagenet_state_dict(), strict=True)
    model.eval()
    import timm.data
    transform = build_transform(timm.data.resolve_data_config({}, model=model))
    with torch.inference_mode():
        probs = model(transform(Image.fromarray(skimage_data.chelsea()))[None]).softmax(-1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, top  # ImageNet's domestic cat classes (tabby, tiger cat, Persian, Siamese, Egyptian)
    assert float(probs[281:286].sum()) > 0.5


def test_default_image_encoder_is_a_1280d_feature_extractor():
    from moderation.encoders import create_image_encoder
    enc = create_image_encoder("efficientnet_lite0")
    assert enc.output_dim == 1280 and enc.pretrained
    assert enc.data_config["input_size"] == (3, 224, 224)
    with torch.inference_mode():
        assert enc(enc.transform(Image.new("RGB", (320, 200)))[None]).shape == (1, 1280)
