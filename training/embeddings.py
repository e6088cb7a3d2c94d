"""On-disk cache of frozen-encoder embeddings, so a head trains in seconds to minutes on the CPU.

One store per (modality, encoder config, precision): `<root>/<modality>-<key>/`, where key is a hash of
the encoder's rebuild config. Inside, each written chunk is a pair `chunk-<n>.npy` (float32 vectors) +
`chunk-<n>.json` (the content hashes, in row order). Content hash: sha256 of the checked text, or of the
image file's bytes. Reading uses `np.load(allow_pickle=False)`: nothing is unpickled.

Posts are preprocessed by the scorer's own `prepare` (same checks, same transforms as serving), and the
vectors come from the same `ModerationModel.embed` path that scoring runs, so a head trained here sees
exactly what it will see when served.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from moderation.inputs import DEFAULT_LIMITS, check_text
from moderation.model import ModerationModel, collate
from moderation.schema import InputError

DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache" / "embeddings"
CACHE_ENV = "MODERATION_CACHE_DIR"


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: `root`, else $MODERATION_CACHE_DIR, else .cache/embeddings in the repo."""
    if root is not None:
        return Path(root)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else DEFAULT_CACHE_DIR


def encoder_key(model: ModerationModel, modality: str, precision: str = "fp32") -> str:
    """A short stable hash of what decides a modality's embeddings: encoder config and precision."""
    cfg = model.config.text_encoder if modality == "text" else model.config.image_encoder
    blob = json.dumps({"modality": modality, "encoder": cfg, "precision": precision}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def content_hash(modality: str, value: str) -> str:
    """sha256 of a text (UTF-8), or of an image file's bytes (value = its path)."""
    if modality == "text":
        return hashlib.sha256(value.encode("utf-8")).hexdigest()
    return hashlib.sha256(Path(value).read_bytes()).hexdigest()


class EmbeddingStore:
    """Vectors of one encoder config, keyed by content hash. Append-only; safe to read while nobody writes."""

    def __init__(self, folder: Path, meta: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if meta is not None and not (self.folder / "meta.json").exists():
            (self.folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._index: dict[str, tuple[int, int]] = {}
        self._chunks: list[np.ndarray] = []
        for keys_file in sorted(self.folder.glob("chunk-*.json")):
            vec_file = keys_file.with_suffix(".npy")
            try:
                keys = json.loads(keys_file.read_text())
                vectors = np.load(vec_file, allow_pickle=False)
            except (OSError, ValueError):
                continue  # an interrupted write, or a chunk compacted away meanwhile: its vectors are recomputed
            if vectors.shape[0] != len(keys):
                continue
            slot = len(self._chunks)
            self._chunks.append(vectors)
            for row, key in enumerate(keys):
                self._index[key] = (slot, row)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> np.ndarray:
        slot, row = self._index[key]
        return self._chunks[slot][row]

    @property
    def n_chunks(self) -> int:
        return len(self._chunks)

    def compact(self) -> None:
        """Merge every chunk into one (many small files make loading slow). The new chunk is written first."""
        if len(self._chunks) < 2:
            return
        old = sorted(self.folder.glob("chunk-*.json"))
        keys = list(self._index)
        vectors = np.stack([self.get(k) for k in keys])
        stem = self.folder / f"chunk-{0:06d}-merged-{os.getpid()}-{len(keys)}"
        np.save(stem.with_suffix(".npy"), vectors, allow_pickle=False)
        tmp = stem.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(keys))
        tmp.replace(stem.with_suffix(".json"))
        for f in old:
            if f.stem != stem.name:
                f.unlink(missing_ok=True)
                f.with_suffix(".npy").unlink(missing_ok=True)
        self._chunks = [vectors]
        self._index = {k: (0, i) for i, k in enumerate(keys)}

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Append vectors (one row per key) as a new chunk: vectors first, keys last (the commit marker)."""
        if len(keys) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(list(self.folder.glob("chunk-*.json")))
        stem = self.folder / f"chunk-{n + 1:06d}-{os.getpid()}-{time.time_ns()}"
        np.save(stem.with_suffix(".npy"), vectors, allow_pickle=False)
        tmp = stem.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(list(keys)))
        tmp.replace(stem.with_suffix(".json"))
        slot = len(self._chunks)
        self._chunks.append(vectors)
        for row, key in enumerate(keys):
            self._index[key] = (slot, row)


@dataclass
class EmbeddedSet:
    """Embeddings of a list of posts: {modality: (N, D) float32} (absent rows zero), (N, M) presence mask.

    `ok` (N,) marks posts that could be prepared; `errors` maps post id -> error message for the others.
    """

    embeddings: dict[str, np.ndarray]
    present: np.ndarray
    ok: np.ndarray
    errors: dict[str, str] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0


def embed_posts(model: ModerationModel, prepare: Any, posts: Sequence[dict], *, cache: str | os.PathLike | None = None,
                batch_size: int = 32, precision: str = "fp32", progress: bool = True,
                desc: str = "embedding", modalities: Sequence[str] | None = None) -> EmbeddedSet:
    """Frozen-encoder embeddings of `posts` (dicts with id, text, image = absolute path or None).

    `prepare(post, image_root)` is the scorer's preprocessing (Scorer.prepare). Cached vectors are reused;
    only misses are prepared and encoded. A post that fails preparation is marked not ok, with its error.
    Units: vectors are the encoder's pooled output (text: mean-pooled last layer; image: pooled features).
    `modalities` restricts which modalities are embedded (fine-tuning runs the others live); `present` has
    a column per model modality, False for those not embedded.
    """
    from tqdm.auto import tqdm

    all_modalities = model.modalities
    modalities = tuple(m for m in all_modalities if modalities is None or m in modalities)
    root = cache_root(cache)
    stores = {m: EmbeddingStore(root / f"{m}-{encoder_key(model, m, precision)}",
                                meta={"modality": m, "precision": precision,
                                      "encoder": model.config.text_encoder if m == "text" else model.config.image_encoder})
              for m in modalities}
    n = len(posts)
    dims = {m: int(model.encoders[m].output_dim) for m in modalities}
    out = {m: np.zeros((n, dims[m]), dtype=np.float32) for m in modalities}
    present = np.zeros((n, len(all_modalities)), dtype=bool)
    ok = np.ones(n, dtype=bool)
    errors: dict[str, str] = {}
    keys: dict[str, list[str | None]] = {m: [None] * n for m in modalities}
    todo: list[int] = []
    for i, post in enumerate(posts):
        try:
            text, _ = check_text(post.get("text"), DEFAULT_LIMITS)
            image = post.get("image")
            if "text" in modalities and text is not None:
                keys["text"][i] = content_hash("text", text)
            if "image" in modalities and image is not None:
                keys["image"][i] = content_hash("image", image)
            if text is None and image is None:
                # An empty post: let prepare() raise its own precise error.
                prepare(_relative(post), _root(post))
        except (InputError, OSError) as exc:
            ok[i] = False
            errors[str(post.get("id"))] = str(exc)
            continue
        if any(keys[m][i] is not None and keys[m][i] not in stores[m] for m in modalities):
            todo.append(i)
    hits = n - len(todo) - int((~ok).sum())
    # Sorting by text length cuts padding, as the scorer does.
    todo.sort(key=lambda i: len(posts[i].get("text") or ""))
    model.eval()
    autocast = (torch.autocast(device_type="cpu", dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast(device_type="cpu", enabled=False))
    bar = tqdm(total=len(todo), desc=desc, unit="post", disable=not progress or not todo)
    with torch.inference_mode(), autocast:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            prepared, rows = [], []
            for i in chunk:
                try:
                    prepared.append(prepare(_strip(_relative(posts[i]), modalities), _root(posts[i])))
                    rows.append(i)
                except InputError as exc:
                    ok[i] = False
                    errors[str(posts[i].get("id"))] = str(exc)
            if prepared:
                batch = collate(prepared, model)
                emb = model.embed(batch)
                for m in modalities:
                    j = all_modalities.index(m)
                    sel = [r for r, i in enumerate(rows) if batch["present"][r, j]
                           and keys[m][i] is not None and keys[m][i] not in stores[m]]
                    if sel:
                        stores[m].put([keys[m][rows[r]] for r in sel], emb[m][sel].float().numpy())
            bar.update(len(chunk))
    bar.close()
    for store in stores.values():
        if store.n_chunks > 32:
            store.compact()
    for i in range(n):
        if not ok[i]:
            continue
        for m in modalities:
            if keys[m][i] is not None:
                out[m][i] = stores[m].get(keys[m][i])
                present[i, all_modalities.index(m)] = True
    return EmbeddedSet(embeddings=out, present=present, ok=ok, errors=errors, hits=hits, misses=len(todo))


def _strip(post: dict, modalities: Sequence[str]) -> dict:
    return {**post, **{m: None for m in ("text", "image") if m not in modalities}}


def _root(post: dict) -> str | None:
    image = post.get("image")
    return str(Path(image).parent) if isinstance(image, str) and Path(image).is_absolute() else None


def _relative(post: dict) -> dict:
    # Images were resolved (and checked to stay inside their dataset folder) when the dataset was loaded;
    # the scorer resolves a path under an image root, so hand it the file name under its own folder.
    image = post.get("image")
    if isinstance(image, str) and Path(image).is_absolute():
        return {**post, "image": Path(image).name}
    return post
