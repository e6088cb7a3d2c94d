"""The text encoder through ONNX Runtime, for small batches: what a real-time endpoint sends (one post a request).

A single tweet through MiniLM in PyTorch pays Python and dispatch overhead (hundreds of small module calls) on
top of its arithmetic; ONNX Runtime runs the same fp32 graph in one call. Measured on the 2-core machine (one thread,
one post per Scorer.score call, 300 test posts, `python -m benchmarks.onnx_text`): 15.4 ms (PyTorch, bf16-guarded)
-> 11.6 ms p50, scores within 4.4e-6 of PyTorch fp32's, 0 decisions changed. From 8 posts a batch it is slower than
PyTorch bf16, so the Scorer sends only batches of at most `max_posts` posts through it (docs/benchmarks-serving.md).
Its output is fp32: a post it scores gets fp32's decision, whatever the precision of the large batches.

The graph is exported once per encoder weights (a digest of every tensor, pooling, layers and length) into
`$MODERATION_CACHE_DIR/onnx/` (default `~/.cache/moderation/onnx/`), written atomically so that replicas
starting together share it; exporting needs the `onnx` package and takes a few seconds. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

#: --onnx-text: "auto" (on for a CPU scorer when onnx and onnxruntime import), "on" (an error if they do not), "off".
ONNX_MODES: tuple[str, ...] = ("auto", "on", "off")
#: Batches of at most this many posts go through ONNX Runtime (a single-post request, or a few gathered).
DEFAULT_MAX_POSTS = 4
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_EXPORT_LOCK = threading.Lock()


class OnnxUnavailableError(RuntimeError):
    """onnx-text "on" where the onnx / onnxruntime packages or a CPU device are missing."""


def check_onnx_mode(mode: str) -> str:
    if mode not in ONNX_MODES:
        raise ValueError(f"onnx_text must be one of {', '.join(ONNX_MODES)}; got {mode!r}")
    return mode


def unavailable_reason(device: torch.device) -> str | None:
    """Why ONNX Runtime cannot run the text encoder here (None: it can)."""
    if device.type != "cpu":
        return f"the scorer runs on {device.type}, and the ONNX path is CPU-only"
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            return f"the package {module!r} is not installed (pip install {module})"
    return None


def cache_root() -> Path:
    root = os.environ.get("MODERATION_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "moderation") / "onnx"


def encoder_digest(encoder: nn.Module) -> str:
    """A digest of everything the exported graph depends on: every tensor of the encoder, its pooling, layers,
    length and the versions of torch and onnx that export it."""
    import onnx

    h = hashlib.sha256()
    meta = (getattr(encoder, "pooling", ""), getattr(encoder, "layers", None), getattr(encoder, "max_length", None),
            torch.__version__, onnx.__version__)
    h.update(repr(meta).encode())
    for name, tensor in encoder.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


class _Wrapper(nn.Module):
    def __init__(self, encoder: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.encoder, self.names = encoder, names

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(self.names, args))
        return self.encoder(kwargs.pop("input_ids"), kwargs.pop("attention_mask"), **kwargs)


def export(encoder: nn.Module, path: Path) -> Path:
    """Export `encoder` (an HFTextEncoder) as an fp32 ONNX graph with dynamic batch and length, atomically."""
    sample = encoder.tokenize(["an example post", "a second, longer example post to export"])
    names = tuple(k for k in _INPUTS if k in sample)
    args = tuple(sample[k] for k in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
    os.close(fd)
    try:
        was_training = encoder.training
        encoder.eval()
        # The TorchScript exporter warns about every traced Python condition in transformers' BERT: not ours to fix.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Wrapper(encoder, names), args, tmp, input_names=list(names), output_names=["embedding"],
                              dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in names}, "embedding": {0: "batch"}},
                              opset_version=17, dynamo=False)
        encoder.train(was_training)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxTextEncoder:
    """Callable like the encoder (`session(input_ids=..., attention_mask=..., ...)` -> (batch, dim) fp32 tensor),
    running an exported graph in ONNX Runtime with `threads` intra-op threads: the encoder's own (exported once into
    `cache`), or, with `graph`, that ONNX file (e.g. a quantised copy of it).

    spin: let ONNX Runtime's pool threads spin after a run (its default), which makes back-to-back single posts
    ~0.7 ms faster at 2 threads, but takes the cores from a PyTorch forward that follows in the same process; a
    bf16-guarded scorer alternates the two in every batch (bf16 in PyTorch, the posts near a threshold in ONNX
    Runtime) and turns it off: re-scoring in ONNX Runtime gave it 1.20x / 1.10x the posts/s of re-scoring in
    PyTorch in chunks of 128 / 8 with spinning off, 0.71x in chunks of 8 with it on (python -m benchmarks.onnx_text
    --guarded measures the first). With one thread (a serving replica per core) it makes no difference."""

    def __init__(self, encoder: nn.Module | None = None, threads: int | None = None, cache: Path | None = None,
                 graph: Path | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        if graph is None:
            if encoder is None:
                raise ValueError("OnnxTextEncoder needs an encoder or a graph")
            graph = (cache or cache_root()) / f"text-{encoder_digest(encoder)}.onnx"
            with _EXPORT_LOCK:
                if not graph.is_file():
                    export(encoder, graph)
        self.path, self.spin = Path(graph), bool(spin)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if not spin:  # see the class docstring
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        feed = {k: np.ascontiguousarray(inputs[k].cpu().numpy(), dtype=np.int64) for k in self.names}
        return torch.from_numpy(self.session.run(None, feed)[0])


def text_runtime(mode: str, model: nn.Module, device: torch.device, threads: int | None = None,
                 max_posts: int = DEFAULT_MAX_POSTS, spin: bool = True,
                 rescoring: bool = False) -> tuple[OnnxTextEncoder | None, str]:
    """(the ONNX Runtime text encoder for `model`, or None; why), by mode "auto" / "on" / "off". max_posts: the
    largest batch the caller sends through it (named in the why); rescoring: the caller also re-scores posts in
    it (bf16-guarded's posts near a threshold); "auto" with neither builds nothing. spin: as OnnxTextEncoder's.

    Raises OnnxUnavailableError for "on" where it cannot run, ValueError for an unknown mode."""
    check_onnx_mode(mode)
    encoders = getattr(model, "encoders", {})
    if mode == "off":
        return None, "off"
    if mode == "auto" and max_posts < 1 and not rescoring:
        return None, "auto: off (no batch goes through it and no post is re-scored at this precision)"
    reason = unavailable_reason(device) if "text" in encoders else "the model reads no text"
    if reason is None and not hasattr(encoders["text"], "tokenize"):
        reason = "the text encoder is not a Hugging Face encoder"
    if reason is not None:
        if mode == "on":
            raise OnnxUnavailableError(f"onnx_text 'on': {reason}")
        return None, f"auto: off ({reason})"
    try:
        session = OnnxTextEncoder(encoders["text"], threads, spin=spin)
    except Exception as exc:  # noqa: BLE001 - auto: an unwritable cache or a failed export leaves PyTorch in charge
        if mode == "on":
            raise OnnxUnavailableError(f"onnx_text 'on': the export failed ({type(exc).__name__}: {exc})") from exc
        return None, f"auto: off (the export failed: {type(exc).__name__}: {exc})"
    uses = [f"batches of at most {max_posts} posts"] if max_posts > 0 else []
    uses += ["re-scored posts"] if rescoring else []
    return session, f"{mode}: {' and '.join(uses) or 'nothing'} run fp32 in ONNX Runtime ({session.path.name})"
