"""Training: masked loss, modality dropout, frozen training learns, embedding cache, LoRA round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.losses import masked_bce, modality_dropout, pos_weights
from training.config import TrainConfig
from training.train import train, training_scorer


def test_nan_label_gives_zero_loss_and_zero_gradient():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]], requires_grad=True)
    labels = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    loss = masked_bce(logits, labels, pos_weight=torch.tensor([2.0, 5.0]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(logits.grad[:, 1] == 0)
    assert torch.all(logits.grad[:, 0] != 0)
    # The known cells alone give the same loss: the unknown ones add nothing.
    alone = masked_bce(logits[:, :1].detach(), labels[:, :1], pos_weight=torch.tensor([2.0]))
    assert float(loss.detach()) == pytest.approx(float(alone))
    # Changing the logit of an unknown cell does not change the loss.
    other = logits.detach().clone()
    other[:, 1] = -100.0
    assert float(masked_bce(other, labels, torch.tensor([2.0, 5.0]))) == pytest.approx(float(loss.detach()))


def test_masked_bce_all_unknown_is_zero():
    logits = torch.zeros(3, 2, requires_grad=True)
    loss = masked_bce(logits, torch.full((3, 2), float("nan")))
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(logits.grad == 0)


def test_pos_weights_from_known_labels_only():
    labels = np.array([[1, np.nan], [0, 1], [0, np.nan], [0, 0]], dtype=np.float32)
    np.testing.assert_allclose(pos_weights(labels), [3.0, 1.0])
    np.testing.assert_allclose(pos_weights(labels, "none"), [1.0, 1.0])


def test_modality_dropout_never_hides_every_modality():
    gen = torch.Generator().manual_seed(0)
    present = torch.tensor([[True, True], [True, False], [False, True]] * 400)
    out = modality_dropout(present, 0.9, gen)
    assert bool(out.any(dim=1).all())
    assert torch.equal(out[1::3], present[1::3]) and torch.equal(out[2::3], present[2::3])
    both = out[0::3]
    hidden_image, hidden_text = int((~both[:, 0]).sum()), int((~both[:, 1]).sum())
    assert hidden_image + hidden_text == pytest.approx(0.9 * 400, abs=40)
    assert hidden_image > 100 and hidden_text > 100  # either modality gets hidden
    assert not bool((out & ~present).any())  # never reveals an absent modality
    assert torch.equal(modality_dropout(present, 0.0, gen), present)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "adapter"}, "mode must be one of"),
    ({"class_weight": "auto"}, "class_weight"),
    ({"modality_dropout": 1.0}, "modality_dropout"),
    ({"early_stopping": "test"}, "early_stopping"),
])
def test_train_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_frozen_training_learns_and_cache_hits(tiny_specs, tiny_model_config, tmp_path):
    config = TrainConfig(mode="frozen", epochs=25, batch_size=16, lr=1e-2, patience=25, early_stopping="val",
                         cache_dir=str(tmp_path / "cache"), seed=1)
    logs: list[str] = []
    result = train(tiny_specs, tmp_path / "model", tiny_model_config, config, progress=False, log=logs.append)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    assert result.best["mean_ap"] > 0.9
    assert result.best["mean_ap"] >= first["mean_ap"]
    lines = (tmp_path / "model" / "training_log.jsonl").read_text().splitlines()
    assert len(lines) == len(result.history) and "mean_ap" in json.loads(lines[0])
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    assert cfg["trained"] is True and cfg["training"]["config"]["mode"] == "frozen"
    assert cfg["training"]["datasets"][0]["labels"] == {"label": "hate"}
    assert not any(" 0 computed" in line for line in logs), logs
    # Second run: every embedding comes from the cache.
    logs.clear()
    train(tiny_specs, tmp_path / "model2", tiny_model_config, TrainConfig(**{**config.__dict__, "epochs": 1}),
          progress=False, log=logs.append)
    assert any(" 0 computed" in line for line in logs), logs


def test_embedding_cache_reuses_vectors(tiny_specs, tiny_model_config, tmp_path):
    from moderation.model import ModerationModel
    from moderation.datasets import load_labelled
    from training.embeddings import embed_posts

    data = load_labelled(tiny_specs, ["hate", "offensive"], "train")
    model = ModerationModel(tiny_model_config)
    scorer = training_scorer(model)
    a = embed_posts(model, scorer.prepare, data.posts, cache=tmp_path / "c", progress=False)
    b = embed_posts(model, scorer.prepare, data.posts, cache=tmp_path / "c", progress=False)
    assert a.misses > 0 and b.misses == 0 and b.hits == len(data)
    for m in model.modalities:
        np.testing.assert_array_equal(a.embeddings[m], b.embeddings[m])
    np.testing.assert_array_equal(a.present, b.present)
    # The cached vectors are what the model's own embed() gives for the prepared post.
    from moderation.model import collate
    i = next(k for k, p in enumerate(data.posts) if p["image"] and p["text"])
    post = data.posts[i]
    from pathlib import Path
    prepared = scorer.prepare({**post, "image": Path(post["image"]).name}, Path(post["image"]).parent)
    with torch.inference_mode():
        live = model.embed(collate([prepared], model))
    for m in model.modalities:
        np.testing.assert_allclose(b.embeddings[m][i], live[m][0].numpy(), rtol=1e-5, atol=1e-6)


def test_bad_posts_are_reported_not_trained(tiny_specs, tiny_model_config, tmp_path):
    from PIL import Image  # noqa: F401 - the corrupt file below must fail to decode
    folder = tiny_specs[1].path.parent
    (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with open(tiny_specs[1].path, "a") as fh:
        fh.write(json.dumps({"id": "bad", "image": "images/broken.png", "label": 1, "split": "train"}) + "\n")
    logs: list[str] = []
    train(tiny_specs, tmp_path / "m", tiny_model_config,
          TrainConfig(epochs=1, early_stopping="val", cache_dir=str(tmp_path / "c")), progress=False, log=logs.append)
    assert any("1 posts could not be prepared" in line and "image" in line for line in logs), logs


@pytest.mark.parametrize("late", [False, True], ids=["gated", "late+lexical"])
def test_lora_training_round_trips(tiny_specs, tiny_model_config, tmp_path, late):
    pytest.importorskip("peft")
    from moderation.model_dir import load_model
    from moderation.scorer import Scorer

    if late:  # the default model's head, with the text encoder fine-tuned: blend chosen through the live encoder
        tiny_model_config = tiny_model_config.from_dict({**tiny_model_config.to_dict(), "fusion": "late", "lexical": True})
    config = TrainConfig(mode="lora", epochs=2, batch_size=8, lr=3e-3, encoder_lr=3e-3, early_stopping="val",
                         cache_dir=str(tmp_path / "cache"), eval_every=2, stop_metric="macro_auc" if late else "mean_ap")
    result = train(tiny_specs, tmp_path / "lora", tiny_model_config, config, progress=False, log=lambda _: None)
    assert (tmp_path / "lora" / "encoders.safetensors").is_file()
    saved = result.model.trainable_state_dict()
    assert saved and all("lora_" in k for k in saved)
    # Training moved the adapters away from their initialisation (lora_B starts at zero).
    assert any(float(v.abs().sum()) > 0 for k, v in saved.items() if "lora_B" in k)
    model, info = load_model(tmp_path / "lora")
    assert info.config.finetune["text"] == "lora" and info.trained
    posts = [{"id": "1", "text": "vermin scum"}, {"id": "2", "text": "garden coffee"}]
    a = Scorer(result.model, info, num_workers=0)
    b = Scorer.from_dir(tmp_path / "lora", num_workers=0)
    la, _ = a.logits([a.prepare(p) for p in posts])
    lb, _ = b.logits([b.prepare(p) for p in posts])
    np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-6)
    # The loaded scorer merged its adapters into the base weights (same logits as the live, unmerged model).
    assert not any("lora_" in name for name, _ in b.model.named_parameters())
    assert any("lora_" in name for name, _ in a.model.named_parameters())


def test_embedding_store_compacts_and_survives_a_torn_chunk(tmp_path):
    from training.embeddings import EmbeddingStore

    store = EmbeddingStore(tmp_path / "s")
    for i in range(3):
        store.put([f"k{i}a", f"k{i}b"], np.full((2, 4), i, dtype=np.float32))
    (tmp_path / "s" / "chunk-999999-torn.json").write_text('["lost"]')  # its .npy never landed
    reopened = EmbeddingStore(tmp_path / "s")
    assert len(reopened) == 6 and "lost" not in reopened and reopened.n_chunks == 3
    reopened.compact()
    again = EmbeddingStore(tmp_path / "s")
    assert again.n_chunks == 1 and len(again) == 6
    np.testing.assert_array_equal(again.get("k2b"), np.full(4, 2, dtype=np.float32))


def test_cached_lower_layers_give_the_same_embeddings_as_the_full_encoder():
    from transformers import BertConfig, BertModel

    from moderation.encoders.text import HFTextEncoder, tiny_random_bert
    from training.finetune import _top_forward, prefix_states

    tok = tiny_random_bert().tokenizer
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False).eval()
    encoder = HFTextEncoder("tiny-3-layers", model=bert, tokenizer=tok, max_length=16)
    texts = ["a short one", None, "a somewhat longer text with more tokens in it", "mid length text"]
    rows = [0, 2, 3]
    tokens = encoder.tokenize([texts[i] for i in rows])
    tokens.pop("truncated")
    with torch.inference_mode():
        full = encoder(**tokens)
        states = prefix_states(encoder, texts, start=2, progress=False)
        assert states[1] is None
        top = _top_forward(encoder, states, torch.tensor(rows), len(texts), start=2)
    # bf16 storage of the cached states bounds the agreement.
    np.testing.assert_allclose(top[rows].numpy(), full.numpy(), atol=3e-2, rtol=3e-2)
    assert torch.all(top[1] == 0)
    assert len(encoder.model.encoder.layer) == 3  # the layer slice is undone


def test_full_finetuning_saves_the_whole_text_encoder(tiny_specs, tiny_model_config, tmp_path):
    from moderation.model_dir import load_model

    config = TrainConfig(mode="full", epochs=1, batch_size=8, encoder_lr=1e-3, early_stopping="val",
                         cache_dir=str(tmp_path / "cache"))
    result = train(tiny_specs, tmp_path / "full", tiny_model_config, config, progress=False, log=lambda _: None)
    saved = result.model.trainable_state_dict()
    assert set(saved) == {f"text.{k}" for k in result.model.encoders["text"].state_dict()}
    model, info = load_model(tmp_path / "full")
    assert info.config.finetune == {"text": "full", "image": "frozen"}
    for key, value in model.encoders["text"].state_dict().items():  # stored in fp16, loaded into fp32
        assert value.dtype == result.model.encoders["text"].state_dict()[key].dtype
        torch.testing.assert_close(value, result.model.encoders["text"].state_dict()[key], rtol=1e-3, atol=1e-4)
    from moderation.encoders import create_text_encoder
    fresh = create_text_encoder(**tiny_model_config.text_encoder).state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in model.encoders["text"].state_dict().items())


def test_late_fusion_with_lexical_channel_trains_blends_and_round_trips(tiny_specs, tiny_model_config, tmp_path):
    """Late fusion + lexical channel: trained per modality, blend weights chosen on val, saved without pickle,
    and the loaded scorer gives the trained model's logits exactly."""
    from moderation.model_dir import load_model
    from moderation.scorer import Scorer

    cfg = tiny_model_config.from_dict({**tiny_model_config.to_dict(), "fusion": "late", "lexical": True,
                                       "image_weight_cap": 0.5})
    config = TrainConfig(mode="frozen", epochs=20, batch_size=16, lr=1e-2, patience=20, early_stopping="val",
                         stop_metric="macro_auc", class_weight="per_dataset", cache_dir=str(tmp_path / "cache"))
    result = train(tiny_specs, tmp_path / "model", cfg, config, progress=False, log=lambda _: None)
    assert result.best["score"] > 0.9
    head = result.model.head
    assert 0.0 <= float(head.image_weight.max()) <= 0.5
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    channels = saved["training"]["channels"]
    assert set(channels["blend"]["lexical_weight"]) == {"hate", "offensive"}
    # hate is never labelled on a post with an image: its image branch stays off whatever the data say.
    assert channels["blend"]["image_weight"]["hate"] == 0.0
    assert (tmp_path / "model" / "lexical.json").is_file() and (tmp_path / "model" / "lexical.safetensors").is_file()
    model, _ = load_model(tmp_path / "model")
    torch.testing.assert_close(model.head.lexical_weight, head.lexical_weight)
    posts = [{"id": "a", "text": "vermin scum subhuman number 30"}, {"id": "b", "text": "sunshine garden coffee number 31"}]
    live = Scorer(result.model, Scorer.from_dir(tmp_path / "model").info, num_workers=0)
    loaded = Scorer.from_dir(tmp_path / "model", num_workers=0)
    np.testing.assert_allclose(loaded.logits([loaded.prepare(p) for p in posts])[0],
                               live.logits([live.prepare(p) for p in posts])[0], rtol=1e-5, atol=1e-5)
    assert loaded.score(posts)[0].categories["hate"].score > loaded.score(posts)[1].categories["hate"].score


def test_dataset_balanced_weights_neutralise_base_rates():
    from training.losses import dataset_balanced_weights
    labels = np.array([[1.0], [0.0], [0.0], [0.0], [1.0], [float("nan")]])
    w = dataset_balanced_weights(labels, ["a", "a", "a", "a", "b", "b"])
    # dataset a: 1 positive and 3 negatives weigh 2 and 2; dataset b has one known label (one class): weight 1.
    np.testing.assert_allclose(w[:, 0], [2.0, 2 / 3, 2 / 3, 2 / 3, 1.0, 0.0])


def test_cap_rows_samples_each_capped_dataset_and_can_keep_rare_positives():
    import numpy as np

    from moderation.datasets import LabelledSet
    from training.train import cap_rows

    n = 100
    labels = np.zeros((n + 10, 1), dtype=np.float32)
    labels[[3, 40, 77], 0] = 1.0  # three rare positives in the capped dataset
    labels[n + 2, 0] = np.nan
    data = LabelledSet(posts=[{"id": f"x/{i}", "text": str(i), "image": None} for i in range(n + 10)],
                       labels=labels, categories=["violence"], sources=["big"] * n + ["small"] * 10)
    capped = cap_rows(data, {"big": 20, "small": 50}, seed=0)
    assert capped.sources.count("big") == 20 and capped.sources.count("small") == 10
    kept = cap_rows(data, {"big": 20}, seed=0, keep_positive=[0])
    assert kept.sources.count("big") == 20 and kept.sources.count("small") == 10
    ids = {p["id"] for p in kept.posts}
    assert {"x/3", "x/40", "x/77"} <= ids  # every positive kept, 17 others sampled
    assert cap_rows(data, {"big": 2}, seed=0, keep_positive=[0]).sources.count("big") == 3  # positives exceed the cap
    # without keep_positive the sample is the one the caps always drew (the shipped recipe's data unchanged)
    assert [p["id"] for p in cap_rows(data, {"big": 20}, seed=0, keep_positive=[]).posts] == [p["id"] for p in capped.posts]
