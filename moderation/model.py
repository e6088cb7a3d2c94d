"""The moderation model: text encoder + image encoder -> fusion -> one logit per category (multi-label).

Assembled by injection (after torchmultimodal's LateFusion): `ModerationModel(config)` builds its encoders
from the registry, or takes them ready-made (tests inject tiny ones). The architecture is described by a
small `ModelConfig` dataclass that a model directory stores, so loading needs nothing else.

`collate(items, model)` turns prepared posts into one batch; training, evaluation and scoring all use it,
so preprocessing cannot drift between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from moderation.encoders import create_image_encoder, create_text_encoder
from moderation.fusion import create_fusion
from moderation.schema import DEFAULT_CATEGORIES, MODALITIES, normalize_category


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model's architecture. Stored in the model directory's config.json."""

    #: Category names, in the order of the output logits.
    categories: list[str] = field(default_factory=lambda: list(DEFAULT_CATEGORIES))
    #: Arguments of `create_text_encoder` (None: a model without text).
    text_encoder: dict[str, Any] | None = field(
        default_factory=lambda: {"name": "all-MiniLM-L6-v2", "pooling": "mean", "max_length": 128})
    #: Arguments of `create_image_encoder` (None: a model without images).
    image_encoder: dict[str, Any] | None = field(default_factory=lambda: {"name": "efficientnet_lite0"})
    #: Fusion: "late" (one classifier per modality, logits combined with a validated, capped image weight;
    #: see LateFusionClassifier), or a fused representation: "concat" or "gated" (moderation.fusion).
    fusion: str = "gated"
    #: Width of the fused representation.
    fusion_dim: int = 256
    #: Dropout inside the fusion and before the classifier.
    dropout: float = 0.1
    #: How each encoder was trained: "frozen", "lora" (text only) or "full". Decides what is saved.
    finetune: dict[str, str] = field(default_factory=lambda: {"text": "frozen", "image": "frozen"})
    #: LoRA settings for the text encoder when finetune["text"] == "lora" (peft LoraConfig arguments).
    text_lora: dict[str, Any] | None = None
    #: Full fine-tuning: encoder tensors whose name contains one of these strings stay frozen at their pretrained
    #: values and are not saved (e.g. "word_embeddings": half of MiniLM's weights, barely moved by fine-tuning).
    frozen_encoder_keys: list[str] = field(default_factory=list)
    #: Whether the model has a lexical channel (n-gram TF-IDF + linear, moderation.lexical) added to its
    #: text logits with a per-category weight. Needs fusion "late"; stored as lexical.json/.safetensors.
    lexical: bool = False
    #: Late fusion: the largest weight the image logits may get beside the text's (the image must never
    #: drown the text: a weight of 1 would let it count as much).
    image_weight_cap: float = 0.5

    def __post_init__(self) -> None:
        self.categories = [normalize_category(c) for c in self.categories]
        if not self.categories:
            raise ValueError("a model needs at least one category")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"duplicate categories: {self.categories}")
        if self.text_encoder is None and self.image_encoder is None:
            raise ValueError("a model needs a text encoder, an image encoder or both")
        for modality, mode in self.finetune.items():
            if modality not in MODALITIES or mode not in ("frozen", "lora", "full"):
                raise ValueError(f"finetune must map 'text'/'image' to 'frozen'|'lora'|'full', got {self.finetune}")
        if self.finetune.get("image") == "lora":
            raise ValueError("LoRA is supported for the text encoder only")
        if self.finetune.get("text") == "lora" and not self.text_lora:
            self.text_lora = dict(DEFAULT_LORA)
        if self.fusion not in FUSION_KINDS:
            raise ValueError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSION_KINDS)}")
        if self.lexical and (self.fusion != "late" or self.text_encoder is None):
            raise ValueError("a lexical channel needs fusion 'late' and a text encoder")
        if not 0.0 <= self.image_weight_cap <= 1.0:
            raise ValueError(f"image_weight_cap must be in [0, 1], got {self.image_weight_cap}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities this model reads, canonical order."""
        return tuple(m for m in MODALITIES if (self.image_encoder if m == "image" else self.text_encoder) is not None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


FUSION_KINDS: tuple[str, ...] = ("late", "concat", "gated")
DEFAULT_LORA: dict[str, Any] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1,
                                "target_modules": ["query", "key", "value", "dense"]}


class FusionClassifier(nn.Module):
    """Fusion module + dropout + linear layer: embeddings and presence mask in, (B, C) logits out."""

    def __init__(self, fusion: nn.Module, num_categories: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.fusion = fusion
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fusion.out_dim, num_categories)

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.fusion(embeddings, present)))


def _unimodal_head(in_dim: int, num_categories: int, hidden: int, dropout: float) -> nn.Module:
    """LayerNorm + MLP (or a linear layer when hidden is 0): one modality's embedding -> a logit per category."""
    if hidden <= 0:
        return nn.Sequential(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, num_categories))
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                         nn.Dropout(dropout), nn.Linear(hidden, num_categories))


class LateFusionClassifier(nn.Module):
    """One classifier per modality, each giving a logit per category; their logits are combined per category:

        text present:  z = z_text + lexical_weight * z_lexical + image_weight * z_image (if an image is present)
        image only:    z = z_image

    Each unimodal classifier is trained on its own modality (`unimodal`), so neither can lean on the other.
    `image_weight` (C,) is set from validation data (the weight at which adding the image helps most, 0 when
    it never helps: the image branch is then off for that category when there is text) and is clamped to
    [0, image_weight_cap], so the image can never outweigh the text. `lexical_weight` (C,) is the lexical
    channel's blend weight, also chosen on validation data; `image_categories` (C,) marks the categories the
    image classifier was trained on. All three are buffers saved with the head.
    An absent modality's rows are ignored whatever they hold.
    """

    def __init__(self, input_dims: dict[str, int], num_categories: int, hidden: int = 256, dropout: float = 0.1,
                 image_weight_cap: float = 0.5) -> None:
        super().__init__()
        self.modalities = tuple(sorted(input_dims))
        self.heads = nn.ModuleDict({m: _unimodal_head(input_dims[m], num_categories,
                                                      hidden if m == "text" else 0, dropout) for m in self.modalities})
        self.image_weight_cap = float(image_weight_cap)
        self.register_buffer("image_weight", torch.zeros(num_categories))
        self.register_buffer("lexical_weight", torch.zeros(num_categories))
        #: 1 for the categories the image classifier was trained on (labelled posts with an image), 0 for the
        #: others: an image alone says nothing about those (the scorer then reports them as not judged).
        self.register_buffer("image_categories", torch.ones(num_categories))

    def unimodal(self, embeddings: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{modality: (B, C) logits of that modality's own classifier} (rows of absent posts are meaningless)."""
        return {m: self.heads[m](embeddings[m]) for m in self.modalities}

    def combine(self, logits: dict[str, torch.Tensor], present: torch.Tensor,
                lexical: torch.Tensor | None = None) -> torch.Tensor:
        """Per-category combination of unimodal logits (see the class docstring). present: (B, M) bool."""
        if present.dim() != 2 or present.shape[1] != len(self.modalities):
            raise ValueError(f"present must be (batch, {len(self.modalities)}) for modalities {self.modalities}, "
                             f"got {tuple(present.shape)}")
        if not bool(present.any(dim=1).all()):
            raise ValueError("every row needs at least one present modality")
        zero = torch.zeros((), dtype=next(iter(logits.values())).dtype, device=present.device)
        has = {m: present[:, i : i + 1] for i, m in enumerate(self.modalities)}
        if "text" not in self.modalities:
            return torch.where(has["image"], logits["image"], zero)
        z = torch.where(has["text"], logits["text"], zero)
        if lexical is not None:
            z = z + torch.where(has["text"], self.lexical_weight.to(z.dtype) * lexical.to(z.dtype), zero)
        if "image" in self.modalities:
            w = self.image_weight.clamp(0.0, self.image_weight_cap).to(z.dtype)
            image = torch.where(has["image"], logits["image"], zero)
            z = torch.where(has["text"], z + w * image, image)
        return z

    def forward(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor,
                lexical: torch.Tensor | None = None) -> torch.Tensor:
        missing = [m for m in self.modalities if m not in embeddings]
        if missing:
            raise ValueError(f"embeddings lack modalities {missing}; give a tensor for each (rows of absent posts are ignored)")
        return self.combine(self.unimodal(embeddings), present, lexical)


class ModerationModel(nn.Module):
    """Encoders (a ModuleDict keyed by modality) + a FusionClassifier head.

    `forward(batch)` -> (B, C) logits; `embed(batch)` -> {modality: (B, D)} (rows of absent modalities are
    zeros and ignored by the fusion); `head(embeddings, present)` -> logits, which is what frozen-encoder
    training fits on cached embeddings.
    """

    def __init__(self, config: ModelConfig, *, text_encoder: nn.Module | None = None,
                 image_encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        encoders: dict[str, nn.Module] = {}
        if config.image_encoder is not None:
            encoders["image"] = image_encoder if image_encoder is not None else create_image_encoder(**config.image_encoder)
        if config.text_encoder is not None:
            encoders["text"] = text_encoder if text_encoder is not None else create_text_encoder(**config.text_encoder)
            if config.finetune.get("text") == "lora":
                apply_lora(encoders["text"], config.text_lora or DEFAULT_LORA)
        self.encoders = nn.ModuleDict(encoders)
        dims = {m: int(enc.output_dim) for m, enc in self.encoders.items()}
        self.head: nn.Module
        if config.fusion == "late":
            self.head = LateFusionClassifier(dims, len(config.categories), config.fusion_dim, config.dropout,
                                             config.image_weight_cap)
        else:
            self.head = FusionClassifier(create_fusion(config.fusion, dims, config.fusion_dim, config.dropout),
                                         len(config.categories), config.dropout)
        #: The lexical channel (moderation.lexical.LexicalModel), when config.lexical; attached by the trainer
        #: or by moderation.model_dir.load_model. Not an nn.Module: numpy and scikit-learn analyzers.
        self.lexical: Any = None

    @property
    def categories(self) -> list[str]:
        return list(self.config.categories)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    def embed(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Encode the present rows of each modality; scatter them into (B, D) tensors (absent rows zero)."""
        size = int(batch["present"].shape[0])
        out: dict[str, torch.Tensor] = {}
        for i, modality in enumerate(self.modalities):
            encoder = self.encoders[modality]
            index = batch["present"][:, i].nonzero(as_tuple=True)[0]
            if index.numel() == 0:
                out[modality] = torch.zeros(size, encoder.output_dim, device=batch["present"].device)
                continue
            if modality == "text":  # text_runtime: the same encoder run elsewhere (moderation.onnx_text)
                feats = batch.get("text_runtime", encoder)(**batch["text"])
            else:
                feats = encoder(batch["image"])
            full = torch.zeros(size, feats.shape[1], dtype=feats.dtype, device=feats.device)
            out[modality] = full.index_copy(0, index, feats)
        return out

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        embeddings = self.embed(batch)
        if self.config.lexical and "lexical" not in batch:
            raise ValueError("this model has a lexical channel: attach it (model.lexical, moderation.lexical) and "
                             "build its batches with moderation.model.collate")
        # The head runs in fp32 even under bf16 autocast: it is ~0.1% of the work, and its bf16 matmul was up to
        # half of bf16's logit error (largest |bf16 - fp32| on 900 val posts, violence 0.119 -> 0.059), which
        # sets the margins of bf16-guarded scoring (moderation.precision). A no-op in fp32.
        device = next(iter(embeddings.values())).device
        with torch.autocast(device_type=device.type, enabled=False):
            embeddings = {m: e.float() for m, e in embeddings.items()}
            if self.config.lexical:
                return self.head(embeddings, batch["present"], batch["lexical"].float())
            return self.head(embeddings, batch["present"])

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder tensors that training changed, by `config.finetune`: none, LoRA weights, or all."""
        state: dict[str, torch.Tensor] = {}
        for modality, encoder in self.encoders.items():
            mode = self.config.finetune.get(modality, "frozen")
            if mode == "frozen":
                continue
            for key, value in encoder.state_dict().items():
                if mode == "full" and any(k in key for k in self.config.frozen_encoder_keys):
                    continue
                if mode == "full" or "lora_" in key:
                    state[f"{modality}.{key}"] = value
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """The inverse of `trainable_state_dict`: load `{modality}.{key}` tensors into the encoders (others untouched).
        Raises KeyError naming the modality and the first tensors its encoder lacks, before loading any of them."""
        parts = {}
        for modality, encoder in self.encoders.items():
            prefix = f"{modality}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            missing = sorted(set(part) - set(encoder.state_dict()))
            if missing:
                raise KeyError(f"has tensors the {modality} encoder lacks: {missing[:5]}")
            parts[modality] = part
        for modality, part in parts.items():
            if part:
                self.encoders[modality].load_state_dict(part, strict=False)


def apply_lora(text_encoder: nn.Module, lora: dict[str, Any]) -> None:
    """Inject LoRA adapters (peft) into a text encoder's transformer in place; base weights are frozen."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as exc:
        raise ImportError("LoRA fine-tuning needs the package 'peft' (pip install peft)") from exc
    inject_adapter_in_model(LoraConfig(**lora), text_encoder.model)


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter into its base layer (W + scale * B @ A) and put the plain layer back in its place.

    For inference only: the merged model computes the same function (to float rounding) one matmul per layer
    cheaper, but can no longer be trained or saved as adapters. Returns how many layers were merged.
    """
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # no peft: there cannot be adapters either
        return 0
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoraLayer):
                child.merge(safe_merge=True)
                setattr(parent, name, child.get_base_layer())
                merged += 1
    return merged


@dataclass
class PreparedPost:
    """A post checked and preprocessed, ready to batch: text as a string, image as a (3, H, W) tensor."""

    id: str
    text: str | None
    pixels: torch.Tensor | None
    text_truncated: bool = False

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if (self.pixels if m == "image" else self.text) is not None]


def collate(items: Sequence[PreparedPost], model: ModerationModel,
            device: torch.device | str = "cpu") -> dict[str, Any]:
    """Batch prepared posts for `model`: tokenized texts, stacked pixels, (B, M) presence mask.

    Modalities the model does not read are dropped here (the caller decides whether that is an error).
    The returned dict also holds `truncated` (B,) bool: text cut at the encoder's max length, and, for a
    model with a lexical channel, `lexical` (B, C): its logits (zero rows for posts without text).
    """
    modalities = model.modalities
    present = torch.zeros(len(items), len(modalities), dtype=torch.bool)
    batch: dict[str, Any] = {}
    truncated = torch.tensor([bool(it.text_truncated) for it in items], dtype=torch.bool)
    if "text" in modalities:
        col = modalities.index("text")
        rows = [i for i, it in enumerate(items) if it.text is not None]
        present[rows, col] = True
        if rows:
            tokens = model.encoders["text"].tokenize([items[i].text for i in rows])
            truncated[rows] |= tokens.pop("truncated")
            batch["text"] = {k: v.to(device) for k, v in tokens.items()}
        # Embedding-only passes (training caches) run before the lexical channel is fitted; forward() refuses
        # a batch without it.
        if model.config.lexical and model.lexical is not None:
            lexical = torch.zeros(len(items), len(model.categories))
            if rows:
                lexical[rows] = torch.from_numpy(model.lexical.logits([items[i].text for i in rows]))
            batch["lexical"] = lexical.to(device)
    if "image" in modalities:
        col = modalities.index("image")
        rows = [i for i, it in enumerate(items) if it.pixels is not None]
        present[rows, col] = True
        if rows:
            batch["image"] = torch.stack([items[i].pixels for i in rows]).to(device)
    batch["present"] = present.to(device)
    batch["truncated"] = truncated
    return batch
