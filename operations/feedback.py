"""Reviewers' verdicts as labels: an append-only feedback store that training reads like any other dataset.

    store = FeedbackStore.create("feedback/", categories=["hate", "offensive"])
    store.add([{"post_id": "p1", "category": "hate", "harmful": True, "reviewer": "r7"}], decisions=["logs/"])
    spec = store.spec()                      # a moderation.datasets.DatasetSpec of feedback/data.jsonl
    # simulated reviewers for tests and demonstrations: operations.simulate
    # the online metrics (review precision, appeal overturn rate, proactive rate): operations.online_metrics

A store is a folder:

    store.json      format version, categories, split fractions (train / val / test by a hash of the post id)
    verdicts.jsonl  every verdict ever added, in order (append-only): post_id, category, harmful, reviewer, time,
                    appeal (null | "upheld" | "overturned"), origin ("model": the model sent the post to review or
                    blocked it; "report": a user reported it), text / image (the post's content), and what the
                    model did (model_action, model_score, model_version), joined from the decision log
    data.jsonl      the dataset, rebuilt after every add: one row per post with content (id, text, image, split,
                    one 0/1 column per category, null where no reviewer judged that category)
    images/         copies of the posts' images (data.jsonl names them relative to the store)

A post's label for a category is its latest verdict (by time); an appeal outcome "overturned" reverses that
verdict (the post was wrongly actioned, or wrongly left up).

An appeal of a decision is a record of kind "appeal": {"kind": "appeal", "post_id", "category", "appeal":
"upheld" | "overturned", "reviewer" (who decided the appeal), "action": the decision appealed (allow / review /
block; default: the category's action in the decision log)}. It needs no `harmful`: the decision's own judgement
is taken (harmful when it was review or block), so an overturned block becomes a "not harmful" label and retraining
learns from it like any reviewer verdict. Stored verdicts carry `kind` and `decision_action`. Posts go to train / val / test by a hash of their id,
so a post never changes split as the store grows and the val / test parts stay held out for good.
A verdict without content (neither given nor found in the decision log) still counts in the online metrics but
cannot become a training row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from moderation.datasets import DatasetSpec
from moderation.decision_log import ID_SALT_ENV, decision_files, hash_id, iter_log_rows, parse_time
from moderation.dumps import iter_rows
from moderation.policy import ACTIONS
from moderation.filelock import file_lock, holder
from moderation.inputs import decode_image, read_image_bytes, resolve_image_path
from moderation.schema import InputError, normalize_category

FORMAT_VERSION = 1
STORE_FILE = "store.json"
VERDICTS_FILE = "verdicts.jsonl"
LOCK_FILE = "store.lock"
DATA_FILE = "data.jsonl"
IMAGES_DIR = "images"
APPEALS: tuple[str, ...] = ("upheld", "overturned")
KINDS: tuple[str, ...] = ("verdict", "appeal")
ORIGINS: tuple[str, ...] = ("model", "report")
DEFAULT_SPLITS: dict[str, float] = {"train": 0.6, "val": 0.2, "test": 0.2}
_YES = {"1", "true", "yes", "y", "harmful"}
_NO = {"0", "false", "no", "n", "not_harmful", "harmless", "ok"}


class FeedbackError(ValueError):
    """A feedback store or a verdict is invalid."""


def now_iso() -> str:
    """Now, UTC, as the store writes times: ISO 8601 to the second with a "Z"."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _as_harmful(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower().replace("-", "_") in _YES | _NO:
        return value.strip().lower().replace("-", "_") in _YES
    raise FeedbackError(f"'harmful' must be true/false (or 1/0, yes/no), got {value!r}")


def split_of(post_id: str, splits: Mapping[str, float] = DEFAULT_SPLITS) -> str:
    """The split of a post: a fixed function of its id (sha256), so it never changes."""
    u = int(hashlib.sha256(str(post_id).encode("utf-8")).hexdigest()[:12], 16) / float(16 ** 12)
    edge = 0.0
    for name, share in splits.items():
        edge += share
        if u < edge:
            return name
    return list(splits)[-1]


@dataclass
class AddSummary:
    """What an `add` did: verdicts stored, duplicates skipped, rejected (with reasons), content found."""
    added: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    content_from_log: int = 0
    without_content: int = 0
    rows: int = 0

    def line(self) -> str:
        return (f"{self.added} verdicts added ({self.content_from_log} with content from the decision log, "
                f"{self.without_content} without content: counted in the metrics, not trainable), "
                f"{self.duplicates} duplicates skipped, {len(self.rejected)} rejected; the dataset holds {self.rows} posts")


class FeedbackStore:
    """A folder of verdicts and the dataset built from them (see the module docstring)."""
    def __init__(self, path: str | os.PathLike, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    @property
    def splits(self) -> dict[str, float]:
        return dict(self.meta["splits"])

    @classmethod
    def create(cls, path: str | os.PathLike, categories: Sequence[str],
               splits: Mapping[str, float] = DEFAULT_SPLITS) -> "FeedbackStore":
        """A new, empty store. Raises FeedbackError when `path` already holds one or the splits are invalid."""
        path = Path(path)
        if (path / STORE_FILE).exists():
            raise FeedbackError(f"{path} already holds a feedback store")
        cats = [normalize_category(c) for c in categories]
        if not cats or len(set(cats)) != len(cats):
            raise FeedbackError(f"a feedback store needs distinct categories, got {list(categories)}")
        if set(splits) != {"train", "val", "test"} or any(v < 0 for v in splits.values()) or \
                not math.isclose(sum(splits.values()), 1.0, abs_tol=1e-6) or splits["train"] <= 0:
            raise FeedbackError(f"splits must give train (> 0), val and test shares summing to 1, got {dict(splits)}")
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "categories": cats, "splits": dict(splits), "created": now_iso()}
        (path / STORE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        (path / VERDICTS_FILE).touch()
        store = cls(path, meta)
        store.rebuild()
        return store

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeedbackStore":
        """An existing store. Raises FeedbackError when `path` holds none."""
        path = Path(path)
        try:
            meta = json.loads((path / STORE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FeedbackError(f"{path} is not a feedback store (no {STORE_FILE}); create one with "
                                "`moderation feedback add --store DIR --categories ...`") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise FeedbackError(f"{path / STORE_FILE} is not readable JSON: {exc}") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise FeedbackError(f"{path / STORE_FILE} has format_version {meta.get('format_version')!r}; "
                                f"this code reads {FORMAT_VERSION}")
        return cls(path, meta)

    # --- reading --------------------------------------------------------------------------------------

    def verdicts(self) -> list[dict[str, Any]]:
        """Every stored verdict, in the order added. A last line without its newline is a write cut short (a
        `kill -9` during `feedback add`) and is left out, as the decision-log reader does; `add` repairs it.
        Raises FeedbackError naming the file and line for any other line that is not a JSON verdict."""
        path = self.path / VERDICTS_FILE
        lines = (path.read_bytes() if path.exists() else b"").split(b"\n")
        out = []
        for n, line in enumerate(lines[:-1], 1):
            if not line.strip():
                continue
            try:
                v = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                v = exc
            if not isinstance(v, dict):
                raise FeedbackError(f"{path}:{n}: not a JSON verdict ({v if isinstance(v, Exception) else type(v).__name__}); "
                                    "the store is damaged: fix or remove that line")
            out.append(v)
        return out

    def _repair_torn_tail(self) -> None:
        """Cut a last line left without its newline by a write cut short (see verdicts)."""
        path = self.path / VERDICTS_FILE
        if not path.exists():
            return
        raw = path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            with open(path, "r+b") as fh:
                fh.truncate(raw.rfind(b"\n") + 1)

    def spec(self, name: str = "feedback"):
        """The store's dataset as a moderation.datasets.DatasetSpec (label column = category name)."""
        return DatasetSpec(path=self.path / DATA_FILE, labels={c: c for c in self.categories}, name=name)

    def fingerprint(self) -> str:
        """sha256 (16 hex) of verdicts.jsonl: which verdicts a model was trained on (lineage)."""
        return hashlib.sha256((self.path / VERDICTS_FILE).read_bytes()).hexdigest()[:16]

    # --- adding ---------------------------------------------------------------------------------------

    def check(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A verdict validated and normalised (see the module docstring for its fields). Raises FeedbackError."""
        if not isinstance(raw, Mapping):
            raise FeedbackError(f"a verdict must be an object, got {type(raw).__name__}")
        pid = raw.get("post_id", raw.get("id"))
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or pid == "":
            raise FeedbackError("the verdict has no post_id")
        try:
            category = normalize_category(str(raw.get("category") or ""))
        except ValueError:
            raise FeedbackError(f"verdict on {pid!r} has no category") from None
        if category not in self.categories:
            raise FeedbackError(f"category {category!r} is not one of the store's {self.categories}")
        reviewer = raw.get("reviewer")
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise FeedbackError(f"verdict on {pid!r} has no reviewer")
        appeal = raw.get("appeal") or None
        if appeal is not None and appeal not in APPEALS:
            raise FeedbackError(f"appeal must be one of {APPEALS} or empty, got {appeal!r}")
        origin = raw.get("origin") or None
        if origin is not None and origin not in ORIGINS:
            raise FeedbackError(f"origin must be one of {ORIGINS} or empty, got {origin!r}")
        when = raw.get("time") or now_iso()
        try:
            parse_time(when)
        except (ValueError, TypeError):
            raise FeedbackError(f"time {when!r} is not an ISO 8601 time") from None
        text = raw.get("text") if isinstance(raw.get("text"), str) and raw.get("text").strip() else None
        image = raw.get("image") if isinstance(raw.get("image"), str) and raw.get("image") else None
        kind = raw.get("kind") or "verdict"
        if kind not in KINDS:
            raise FeedbackError(f"kind must be one of {KINDS}, got {kind!r}")
        decided = raw.get("action") or None
        if decided is not None and decided not in ACTIONS:
            raise FeedbackError(f"action (the decision appealed) must be one of {ACTIONS}, got {decided!r}")
        if kind == "appeal" and appeal is None:
            raise FeedbackError(f"appeal on {pid!r} has no outcome: 'appeal' must be one of {APPEALS}")
        # an appeal takes the appealed decision's judgement (known once joined with the decision log, in add)
        harmful = None if kind == "appeal" and raw.get("harmful") is None else _as_harmful(raw.get("harmful"))
        request_id = raw.get("request_id") or None
        if request_id is not None and not isinstance(request_id, str):
            raise FeedbackError(f"verdict on {pid!r}: request_id must be a string, got {request_id!r}")
        return {"post_id": str(pid), "request_id": request_id, "category": category, "harmful": harmful, "kind": kind,
                "decision_action": decided,
                "reviewer": reviewer.strip(), "time": str(when), "appeal": appeal, "origin": origin,
                "text": text, "image": image, "model_action": raw.get("model_action"),
                "model_score": raw.get("model_score"), "model_version": raw.get("model_version"),
                "note": raw.get("note")}

    def add(self, verdicts: Iterable[Mapping[str, Any]], *, decisions: "DecisionIndex | None" = None,
            image_root: str | os.PathLike | None = None) -> AddSummary:
        """Validate, join content and the model's decision, store, and rebuild data.jsonl.

        decisions: the decision log / batch outputs to join from (load_decision_index). image_root: folder that
        relative image paths of the verdicts resolve under (default: the current folder). A bad verdict is
        rejected with its reason and the others are stored; an exact repeat of a stored verdict is skipped.
        """
        def busy(lock: Path) -> Exception:
            return FeedbackError(f"{self.path} is being changed by another `feedback add`{holder(lock)} (it holds "
                                 f"{lock}); try again when it has finished")

        # One add at a time: two at once stored every verdict twice, or made one fail although it had saved.
        with file_lock(self.path / LOCK_FILE, wait_s=120, busy=busy):
            self._repair_torn_tail()
            return self._add(verdicts, decisions, image_root)

    def _add(self, verdicts: Iterable[Mapping[str, Any]], decisions: "DecisionIndex | None",
             image_root: str | os.PathLike | None) -> AddSummary:
        summary = AddSummary()
        seen = {_verdict_key(v) for v in self.verdicts()}
        new: list[dict[str, Any]] = []
        for n, raw in enumerate(verdicts, 1):
            from_log = False
            try:
                v = self.check(raw)
                joined = decisions.lookup(v["post_id"], v["request_id"]) if decisions is not None else None
                if joined is not None:
                    if v["text"] is None and v["image"] is None and (joined.get("text") or joined.get("image")):
                        v["text"], v["image"] = joined.get("text"), joined.get("image")
                        from_log = True
                        summary.content_from_log += 1
                    cat = v["category"]
                    v["model_action"] = v["model_action"] or joined.get(f"{cat}_action")
                    if v["model_score"] is None:
                        v["model_score"] = joined.get(f"{cat}_score")
                    v["model_version"] = v["model_version"] or joined.get("model_version")
                    v["post_action"] = joined.get("action")
                if v["kind"] == "appeal":
                    v["decision_action"] = v["decision_action"] or v["model_action"]
                    if v["decision_action"] is None:
                        raise FeedbackError(f"appeal on {v['post_id']!r}: the decision appealed is unknown; give "
                                            "'action' (allow / review / block) or the decision log (--decisions)")
                    if v["harmful"] is None:
                        v["harmful"] = v["decision_action"] != "allow"
                if v["origin"] is None and v["model_action"] is not None:
                    v["origin"] = "model" if v["model_action"] in ("review", "block") else "report"
                if v["image"] is not None:
                    # an image from the decision log was confined to its input's folder when it was joined
                    root = Path(v["image"]).parent if from_log else image_root
                    v["image"] = self._keep_image(v["image"], root)
            except FeedbackError as exc:
                where = raw.get("_where") if isinstance(raw, Mapping) else None
                summary.rejected.append(f"{where or f'verdict {n}'}: {exc}")
                continue
            key = _verdict_key(v)
            if key in seen:
                summary.duplicates += 1
                continue
            seen.add(key)
            if v["text"] is None and v["image"] is None:
                summary.without_content += 1
            new.append(v)
        if new:
            with open(self.path / VERDICTS_FILE, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in new))
                fh.flush()
                os.fsync(fh.fileno())
        summary.added = len(new)
        summary.rows = self.rebuild()
        return summary

    def _keep_image(self, image: str, image_root: str | os.PathLike | None) -> str:
        """Copy a post's image into the store (named by its content hash); returns the path relative to it.

        The path is confined to `image_root` (default: the current folder) as the batch reader confines it, and
        the file must decode as an image within the input limits: `/etc/passwd` named as a verdict's image was
        copied into the store and listed as a training image."""
        if image.startswith(IMAGES_DIR + "/") and (self.path / image).is_file():
            return image
        if "://" in image or image.startswith("data:"):
            raise FeedbackError("images are given as file paths (URLs and data URLs are not fetched)")
        try:
            data = read_image_bytes(image, image_root)
            decode_image(data)
        except InputError as exc:
            raise FeedbackError(f"image {image!r}: {exc.message}") from None
        name = hashlib.sha256(data).hexdigest()[:24] + Path(image).suffix.lower()[:8]
        dest = self.path / IMAGES_DIR / name
        if not dest.exists():
            dest.parent.mkdir(exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(dest)
        return f"{IMAGES_DIR}/{name}"

    def labels(self) -> dict[str, dict[str, Any]]:
        """Per post: content and the final label per category (latest verdict, appeals applied)."""
        posts: dict[str, dict[str, Any]] = {}
        latest: dict[tuple[str, str], tuple[str, int, bool]] = {}
        for i, v in enumerate(self.verdicts()):
            p = posts.setdefault(v["post_id"], {"text": None, "image": None, "verdicts": 0})
            p["verdicts"] += 1
            if p["text"] is None and v.get("text"):
                p["text"] = v["text"]
            if p["image"] is None and v.get("image"):
                p["image"] = v["image"]
            label = bool(v["harmful"]) != (v.get("appeal") == "overturned")
            key = (v["post_id"], v["category"])
            stamp = (_sortable(v["time"]), i, label)
            if key not in latest or stamp[:2] >= latest[key][:2]:
                latest[key] = stamp
        for (pid, cat), (_, _, label) in latest.items():
            posts[pid].setdefault("labels", {})[cat] = int(label)
        return posts

    def rebuild(self) -> int:
        """Rewrite data.jsonl from the verdicts; returns the number of posts with content (dataset rows)."""
        rows = []
        for pid, p in self.labels().items():
            if p["text"] is None and p["image"] is None:
                continue
            row = {"id": pid, "text": p["text"], "image": p["image"], "split": split_of(pid, self.splits)}
            row.update({c: p.get("labels", {}).get(c) for c in self.categories})
            rows.append(row)
        tmp = self.path / (DATA_FILE + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(self.path / DATA_FILE)
        return len(rows)


def _sortable(when: str) -> float:
    try:
        return parse_time(when).timestamp()
    except (ValueError, TypeError):
        return 0.0


def _verdict_key(v: Mapping[str, Any]) -> tuple:
    return (v["post_id"], v["category"], bool(v["harmful"]), v["reviewer"], str(v["time"]), v.get("appeal"))


# --- the decision log, indexed by post ------------------------------------------------------------------

class DecisionIndex:
    """Decisions (decision logs or batch outputs) of the posts asked for, by post id; the latest row wins.

    Content: a decision log's `text` column (logs written with content on); for a batch output, the post's `text`
    and `image` read back from its input file (`source_file`, row `source_row`), the image path resolved against
    that file's folder. Logs with hashed ids are matched through sha256(salt + id) (salt: $MODERATION_LOG_ID_SALT).
    """

    def __init__(self, rows: dict[str, dict[str, Any]], salt: str | None,
                 by_request: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.rows = rows
        self.salt = salt
        #: (request id, post key) -> row, for the posts of endpoint requests (decision logs)
        self.by_request = by_request or {}
        self._requests: dict[str, set[str]] = {}
        for request_id, key in self.by_request:
            self._requests.setdefault(key, set()).add(request_id)

    def lookup(self, post_id: str, request_id: str | None = None) -> dict[str, Any] | None:
        """The decision on `post_id` (in request `request_id` when given). Raises FeedbackError when no request
        is given and the id was decided in several requests: OpenAI-shaped requests number their inputs "0",
        "1", ..., so the post id alone would join a verdict to another post's decision."""
        keys = [str(post_id)] + (["#" + hash_id(post_id, self.salt)] if self.salt is not None else [])
        if request_id is not None:
            return next((self.by_request[(str(request_id), k)] for k in keys if (str(request_id), k) in self.by_request),
                        None)
        for key in keys:
            requests = self._requests.get(key, set())
            if len(requests) > 1:
                raise FeedbackError(f"post id {post_id!r} was decided in {len(requests)} requests of the decision log "
                                    "(OpenAI-shaped requests number their inputs \"0\", \"1\", ...): give the "
                                    "verdict's request_id (the log's request_id column) to say which")
            if key in self.rows:
                return self.rows[key]
        return None

    def __len__(self) -> int:
        return len(self.rows)


def load_decision_index(inputs: Sequence[str | os.PathLike], post_ids: Iterable[str] | None = None) -> DecisionIndex:
    """Index the decisions of `post_ids` (all when None) found in decision logs / batch outputs (files, folders,
    globs). Raises FileNotFoundError when an input matches nothing."""

    salt = os.environ.get(ID_SALT_ENV, "")
    wanted: set[str] | None = None
    if post_ids is not None:
        ids = [str(p) for p in post_ids]
        wanted = set(ids) | {"#" + hash_id(p, salt) for p in ids}
    rows: dict[str, dict[str, Any]] = {}
    by_request: dict[tuple[str, str], dict[str, Any]] = {}
    sources: dict[Path, dict[int, str]] = {}   # a batch output's input file -> {row number: post key}
    any_hashed = False
    for path in decision_files(inputs):
        for row in iter_log_rows(path):
            key = row.get("id")
            if key is None and row.get("id_hash"):
                key, any_hashed = "#" + str(row["id_hash"]), True
            if key is None:
                continue
            key = str(key)
            if wanted is not None and key not in wanted:
                continue
            text = row.get("text") if isinstance(row.get("text"), str) else None
            rows[key] = {**row, "text": text, "image": None}
            if row.get("request_id"):
                by_request[(str(row["request_id"]), key)] = rows[key]
            source, number = row.get("source_file"), row.get("source_row")
            if text is None and source and isinstance(number, int) and number > 0:
                src = Path(source)
                if not src.is_file() and (path.parent / source).is_file():
                    src = path.parent / source
                if src.is_file():
                    sources.setdefault(src, {})[number] = key
    for src, wanted_rows in sources.items():  # content read back from the batch job's inputs, one pass per file
        _content_from_input(src, wanted_rows, rows)
    return DecisionIndex(rows, salt if any_hashed else None, by_request)


def _content_from_input(src: Path, wanted_rows: dict[int, str], rows: dict[str, dict[str, Any]]) -> None:
    last = max(wanted_rows)
    for number, raw in iter_rows(src):
        if number > last:
            break
        key = wanted_rows.get(number)
        if key is None or not isinstance(raw, dict) or str(raw.get("id")) != rows[key].get("id", key):
            continue  # the input changed since it was scored: not this post
        text = raw.get("text")
        image = raw.get("image")
        rows[key]["text"] = text if isinstance(text, str) and text.strip() else None
        if isinstance(image, str) and image and "://" not in image and not image.startswith("data:"):
            try:  # confined to the input's folder, as the batch reader resolved it
                rows[key]["image"] = str(resolve_image_path(image, src.parent))
            except InputError:
                rows[key]["image"] = None
