"""Reasons a reviewer can read: the words that drove a post's scores, by occlusion through the real scorer.

A word's weight is how far the calibrated probability of a category falls when the word is masked (probability
points; negative: the word pulled the score down). Two ways to mask, both through the scorer's own model, lexical
channel, fusion head and calibration:

- "occlusion" (exact): every word of the text the model read (the given text, or the OCR text of an image) is
  deleted in turn and the post scored again, all variants of all posts in batched passes. Faithful by
  construction, and costs one encoder pass per word (a tweet: about 25).
- "pooled" (fast, the default): one encoder pass per post; each word's tokens are then left out of the encoder's
  mean pooling (and the word out of the lexical channel's n-grams) and only the head runs again. The same as
  "occlusion" except that the word's influence on the other tokens' contextual states stays in; a mean-pooled
  Hugging Face text encoder only. Agreement with the exact method and the cost of both: docs/trust-and-safety.md.

Long texts are masked in spans of several words so that a post costs at most `max_variants` masked copies (a
tweet: one word at a time).

Image posts: the OCR text is explained the same way (its words are what the text side read) and the hash list
that matched is named; the pixels are kept in every variant, so an image's own contribution is not split into
words.

    explanations = explain(scorer, [{"id": "1", "text": "..."}])
    explanations[0].categories["hate"]     # -> [WordWeight(word="vermin", span=(14, 20), weight=0.31), ...]
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from moderation.schema import Post, ScoreResult

METHODS: tuple[str, ...] = ("pooled", "occlusion")
#: A word for occlusion: letters and digits, with inner apostrophes or hyphens ("don't", "self-made").
_WORD = re.compile(r"\w+(?:['’\-]\w+)*")


@dataclass(frozen=True)
class WordWeight:
    """A word (or span of words) of the scored text, its character span, and how far the category's calibrated
    probability falls when it is masked (probability points; negative: it pulled the score down)."""

    word: str
    span: tuple[int, int]
    weight: float

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "span": list(self.span), "weight": round(self.weight, 4)}


@dataclass
class Explanation:
    """Why one post got its action: its result, the scored text and, per explained category, the words that drove
    its score (strongest first, at most `top_k`, only those that raised it). `text` is the text the model read
    (with OCR text for image posts); `hash_match` names the hash list that matched an image."""

    id: str | None
    result: ScoreResult
    text: str | None = None
    categories: dict[str, list[WordWeight]] = field(default_factory=dict)
    method: str = METHODS[0]
    #: words masked together (1 for a tweet; more for long texts, see `max_variants`)
    span_words: int = 1

    def highlighted(self, category: str, mark: tuple[str, str] = ("[", "]")) -> str:
        """The text with the category's words marked ("these people are [vermin]")."""
        return self._marked(category, lambda text, w: f"{mark[0]}{text}{mark[1]}", lambda text: text)

    def highlighted_html(self, category: str) -> str:
        """The text as HTML (escaped) with the category's words in <mark>, their weight in the title."""
        return self._marked(category, lambda text, w: f"<mark title='{w.weight:+.3f}'>{html.escape(text)}</mark>",
                            html.escape)

    def _marked(self, category: str, mark: Any, plain: Any) -> str:
        if not self.text:
            return ""
        out, pos = [], 0
        for w in sorted(self.categories.get(category, []), key=lambda w: w.span):
            s, e = w.span
            if s < pos:
                continue
            out += [plain(self.text[pos:s]), mark(self.text[s:e], w)]
            pos = e
        out.append(plain(self.text[pos:]))
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"id": self.id, "action": r.action, "method": self.method, "span_words": self.span_words,
                "text": self.text, "ocr_text": r.ocr_text,
                "hash_match": r.hash_match.to_dict() if r.hash_match is not None else None,
                "term_matches": [m.to_dict() for m in r.term_matches],
                "scores": {c: round(v.score, 4) for c, v in r.categories.items()},
                "words": {c: [w.to_dict() for w in ws] for c, ws in self.categories.items()},
                "error_code": r.error_code, "error": r.error}


def words_of(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text`, in order."""
    return [m.span() for m in _WORD.finditer(text)]


def _spans(text: str, max_variants: int) -> tuple[list[tuple[int, int]], int]:
    words = words_of(text)
    size = max(1, math.ceil(len(words) / max_variants)) if max_variants > 0 else 1
    return [(words[i][0], words[min(i + size, len(words)) - 1][1]) for i in range(0, len(words), size)], size


def _masked(text: str, span: tuple[int, int]) -> str:
    s, e = span
    left, right = text[:s].rstrip(" "), text[e:].lstrip(" ")
    return f"{left} {right}".strip() if left and right else (left + right).strip()


def explained_categories(result: ScoreResult) -> list[str]:
    """The categories worth explaining: those the score sent to review or block (not a hash match or a list
    alone); for a post actioned by another rule, its highest-scoring category."""
    cats = [c for c, v in result.categories.items() if v.action in ("review", "block")]
    if not cats and result.categories:
        cats = [max(result.categories, key=lambda c: result.categories[c].score)]
    return cats


def explain(scorer: Any, posts: Sequence[Post | Mapping[str, Any]], *, top_k: int = 5,
            categories: Sequence[str] | None = None, only_actioned: bool = True, max_variants: int = 48,
            method: str = "pooled", image_root: Any = None) -> list[Explanation]:
    """Score `posts` with `scorer` (a moderation.scorer.Scorer) and explain them: one Explanation per post, in order.

    categories: explain these categories (default: `explained_categories` of each post); only_actioned: explain
    only posts sent to review or blocked (the others get their result and no words); top_k: words kept per
    category; max_variants: most masked copies of one post (longer texts are masked in spans of words); method:
    "pooled" or "occlusion" (module docstring). A post that could not be scored gets its error result and no
    words. Raises ValueError for an unknown method, or "pooled" with a text encoder it cannot look inside.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "pooled":
        _check_pooled(scorer)
    prepared = scorer.prepare_many(list(posts), image_root)
    results = scorer.score_prepared(prepared)
    out = [Explanation(id=r.id, result=r, method=method) for r in results]
    variants, owners = [], []  # masked copies of prepared posts, and (explanation index, span) of each
    for i, (item, result) in enumerate(zip(prepared, results)):
        if isinstance(item, ScoreResult) or not result.ok or item.text is None:
            continue
        out[i].text = item.text
        if only_actioned and result.action not in ("review", "block"):
            continue
        spans, out[i].span_words = _spans(item.text, max_variants)
        for span in spans:
            variants.append(replace(item, text=_masked(item.text, span) or None))
            owners.append((i, span))
    if not variants:
        return out
    if method == "pooled":
        masked_probs = _pooled_probabilities(scorer, prepared, owners, variants)
    else:
        # a post whose only word is masked has no text left: score it as the text-free post it would be
        keep = [k for k, v in enumerate(variants) if v.text is not None or v.pixels is not None]
        logits, _ = scorer.logits([variants[k] for k in keep])
        probs = scorer.probabilities([variants[k] for k in keep], logits)
        masked_probs = {k: probs[n] for n, k in enumerate(keep)}
    cats = list(scorer.categories)
    weights: dict[int, dict[str, list[WordWeight]]] = {}
    for k, (i, span) in enumerate(owners):
        result, text = out[i].result, out[i].text
        wanted = categories if categories is not None else explained_categories(result)
        for c in wanted:
            if c not in result.categories:
                continue
            base = result.categories[c].score
            after = float(masked_probs[k][cats.index(c)]) if k in masked_probs else 0.0
            weights.setdefault(i, {}).setdefault(c, []).append(WordWeight(text[span[0]:span[1]], span, base - after))
    for i, per_cat in weights.items():
        out[i].categories = {c: sorted([w for w in ws if w.weight > 0], key=lambda w: -w.weight)[:top_k]
                             for c, ws in per_cat.items()}
    return out


def _check_pooled(scorer: Any) -> None:
    enc = scorer.model.encoders["text"] if "text" in scorer.modalities else None
    if enc is None or getattr(enc, "pooling", None) != "mean" or not hasattr(enc, "tokenizer") \
            or not getattr(enc.tokenizer, "is_fast", False):
        raise ValueError("method 'pooled' needs a mean-pooled Hugging Face text encoder with a fast tokenizer; "
                         "use method 'occlusion'")


def _pooled_probabilities(scorer: Any, prepared: Sequence[Any], owners: list[tuple[int, tuple[int, int]]],
                          variants: list[Any]) -> dict[int, np.ndarray]:
    """Calibrated probabilities of each masked variant, the word's tokens left out of the mean pooling."""
    import torch  # deferred: `moderation explain`'s parser reads METHODS, and --help stays free of torch

    model = scorer.model
    enc = model.encoders["text"]
    by_post: dict[int, list[int]] = {}
    for k, (i, _) in enumerate(owners):
        by_post.setdefault(i, []).append(k)
    out: dict[int, np.ndarray] = {}
    posts = list(by_post)
    with torch.inference_mode(), scorer._autocast(scorer.precision != "fp32"):  # bf16-guarded: its bf16 pass
        for chunk in range(0, len(posts), scorer.batch_size):  # one batched encoder pass, as when scoring
            ids = posts[chunk:chunk + scorer.batch_size]
            tok = enc.tokenizer([prepared[i].text for i in ids], truncation=True, max_length=enc.max_length,
                                padding=True, return_offsets_mapping=True, return_tensors="pt")
            all_offsets = tok.pop("offset_mapping")
            inputs = {k: v.to(scorer.device) for k, v in tok.items() if k in ("input_ids", "attention_mask",
                                                                                "token_type_ids")}
            states = enc.model(**inputs, output_hidden_states=True).hidden_states
            layers = enc.layers or [len(states) - 1]
            for b, i in enumerate(ids):
                _pool_masked(scorer, prepared[i], by_post[i], owners, variants, all_offsets[b],
                             inputs["attention_mask"][b], [states[j][b].float() for j in layers], out)
    return out


def _pool_masked(scorer: Any, item: Any, ks: list[int], owners: list[tuple[int, tuple[int, int]]],
                 variants: list[Any], offsets: torch.Tensor, attention: torch.Tensor, hidden: list[torch.Tensor],
                 out: dict[int, np.ndarray]) -> None:
    """Probabilities of one post's masked variants: its hidden states (T, d) per pooled layer, re-pooled without
    each variant's words, then the head and the calibration."""
    import torch  # deferred: as in _pooled_probabilities

    model = scorer.model
    special = (offsets[:, 0] == offsets[:, 1])
    keep = attention.float().unsqueeze(0).repeat(len(ks), 1)
    for row, k in enumerate(ks):
        s, e = owners[k][1]
        inside = (offsets[:, 0] < e) & (offsets[:, 1] > s) & ~special
        keep[row, inside.to(scorer.device)] = 0.0
    count = keep.sum(1, keepdim=True).clamp_min(1.0)
    text = torch.cat([(keep @ h) / count for h in hidden], dim=-1)
    embeddings = {"text": text}
    present = torch.zeros(len(ks), len(model.modalities), dtype=torch.bool, device=scorer.device)
    present[:, model.modalities.index("text")] = True
    if "image" in model.modalities:
        col = model.modalities.index("image")
        if item.pixels is not None:
            image = model.encoders["image"](item.pixels.unsqueeze(0).to(scorer.device))
            embeddings["image"] = image.expand(len(ks), -1)
            present[:, col] = True
        else:
            embeddings["image"] = torch.zeros(len(ks), model.encoders["image"].output_dim,
                                              device=scorer.device)
    dtype = text.dtype
    embeddings = {m: e.to(dtype) for m, e in embeddings.items()}
    if model.config.lexical:
        lexical = torch.from_numpy(model.lexical.logits([variants[k].text or "" for k in ks])).to(scorer.device)
        logits = model.head(embeddings, present, lexical)
    else:
        logits = model.head(embeddings, present)
    probs = scorer.probabilities([item] * len(ks), logits.float().cpu().numpy().astype(np.float64))
    for row, k in enumerate(ks):
        out[k] = probs[row]


def explanations_html(explanations: Sequence[Explanation], title: str = "Explanations") -> str:
    """A self-contained HTML page: one row per explained (post, category), the words that drove the score marked."""
    rows = []
    for e in explanations:
        r = e.result
        extra = []
        if r.hash_match is not None:
            extra.append(f"hash list {r.hash_match.list} ({r.hash_match.list_version}) entry {r.hash_match.id}")
        extra += [f"{m.action} list {m.list} ({m.list_version}): {m.rule!r}" for m in r.term_matches]
        for c, words in e.categories.items():
            top = ", ".join(f"{w.word} {w.weight:+.3f}" for w in words)
            rows.append(f"<tr><td>{html.escape(str(e.id))}</td><td>{html.escape(str(r.action))}</td>"
                        f"<td>{html.escape(c)} {r.categories[c].score:.3f}</td><td>{e.highlighted_html(c)}</td>"
                        f"<td>{html.escape(top)}</td><td>{html.escape('; '.join(extra))}</td></tr>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:4px 8px;vertical-align:top}mark{background:#ffd54f}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><table><tr><th>id</th><th>action</th>"
            "<th>category, score</th><th>text (words that raised the score marked)</th><th>weights</th>"
            "<th>lists</th></tr>" + "".join(rows) + "</table></body></html>\n")
