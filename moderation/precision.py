"""The numeric precision a scorer runs in: "fp32", "bf16" (autocast), "bf16-guarded", "bf16-block-guarded", or
"auto", the default of batch scoring and serving, which picks a bf16 only where it is both fast and known to keep
the model's blocks, fp32 elsewhere.

    choice = resolve_precision("auto", torch.device("cpu"), model_version=info.model_version, record=info.precision)
    choice.chosen   # "bf16", "bf16-block-guarded", "bf16-guarded" or "fp32"
    choice.line()   # "precision bf16 (auto: native bf16 on this CPU (avx512_bf16); validated for ...)"

"bf16-guarded" scores every post in bf16, then scores again in fp32 the posts whose bf16 logits lie within a
margin of a decision threshold (per category, in logit space: the calibrated scores of logit - margin and
logit + margin fall on two sides of a block or review threshold). A post whose fp32 logit is within the margin of
its bf16 logit therefore gets fp32's decision; the margins are measured on the val splits (the largest
|bf16 - fp32| logit difference there, times a safety factor) and kept in the precision record, which also says
how many test decisions the guarded scoring changed and what share of posts it scored twice. "bf16-block-guarded"
does the same for the block thresholds only: far fewer posts lie near one (1.4% against 12.2% of 1,500 val posts on
the shipped model), blocks stay fp32's, and review / allow may differ where plain bf16's would.

"auto" chooses
1. fp32 unless the device computes bf16 natively: a CPU with AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension
   (Arm), or a CUDA GPU of compute capability 8.0 or later. Elsewhere bf16 is emulated, slower than fp32;
2. bf16 when the model directory's precision record (`precision.json`, written by
   `python -m benchmarks.precision_agreement --record`) says that bf16 was measured against fp32 on the shared
   test splits for this very model version and changed no more blocks than the record's tolerance (0 by default);
3. else bf16-block-guarded, else bf16-guarded, when the record validates it (same test, same tolerance) and gives
   the margins: the first re-scores only the posts near a block threshold (blocks stay fp32's; a review <-> allow
   decision may differ, as plain bf16's may), the second those near any threshold (every decision stays fp32's);
4. else fp32. A model without a record, with a record of another model version (it was retrained), or whose
   record refused both runs in fp32: a block must almost never be wrong, so the thresholds fitted in fp32 are
   only trusted in another precision once measured.

An explicit "fp32" or "bf16" is always obeyed; a bf16 that the record refused carries a warning. An explicit
guarded precision needs margins: the record's, or a Scorer's `guard_margin`.
Core module: torch only, imported where the hardware is asked about, so that the command-line parser can read
PRECISION_MODES without loading torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

#: The precisions a scorer can run in.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "bf16-guarded", "bf16-block-guarded")
#: bf16 with fp32 re-scoring of the posts near a threshold (see the module docstring).
GUARDED = "bf16-guarded"
#: The same, near a block threshold only: blocks stay fp32's, review <-> allow may differ as in plain bf16.
BLOCK_GUARDED = "bf16-block-guarded"
#: The precisions that re-score posts near a threshold, with the record's margins.
GUARDED_MODES: tuple[str, ...] = (GUARDED, BLOCK_GUARDED)
#: What a caller may ask for: a precision, or "auto".
PRECISION_MODES: tuple[str, ...] = ("auto", *PRECISIONS)
#: Posts per forward pass when scoring: 16 ran 1.08-1.13x the posts/s of 32 on the 2-core CPU in bf16 and in fp32,
#: tweets and longer posts alike (`python -m benchmarks.forward_batch`; docs/benchmarks.md).
DEFAULT_BATCH_SIZE = 16
#: The precision record of a model directory.
PRECISION_FILE = "precision.json"
#: The precision the thresholds are fitted in and every other precision is compared with.
REFERENCE = "fp32"
#: CPU feature flags (Linux /proc/cpuinfo names, torch.cpu.get_capabilities() keys) that mean native bf16
#: arithmetic: x86 AVX512-BF16 and AMX-BF16, Arm's BF16 extension (and SVE's).
NATIVE_BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")
CPUINFO = "/proc/cpuinfo"


class PrecisionError(ValueError):
    """A precision that is not one of PRECISION_MODES, or an unreadable precision record."""


# --- the hardware ----------------------------------------------------------------------------------------

def _torch_cpu_capabilities() -> Mapping[str, Any]:
    """torch's own CPU feature detection (cpuinfo; torch >= 2.9), or {} when this torch lacks it."""
    import torch  # deferred: the parser of every subcommand reads this module's constants

    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
    if get is None:
        return {}
    try:
        return dict(get())
    except Exception:  # noqa: BLE001 - a detection failure means "unknown", and /proc/cpuinfo is read as well
        return {}


def _cpuinfo_flags(path: str | os.PathLike = CPUINFO) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo ("flags" on x86, "Features" on Arm); empty when absent."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_native_bf16() -> list[str]:
    """The native-bf16 features of this CPU (sorted), from torch's detection and /proc/cpuinfo; empty: none."""
    caps = _torch_cpu_capabilities()
    found = {f for f in NATIVE_BF16_FLAGS if caps.get(f) is True}
    found |= _cpuinfo_flags() & set(NATIVE_BF16_FLAGS)
    return sorted(found)


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively (not emulated), and what says so (or why not), for the log."""
    import torch  # deferred: as in _torch_cpu_capabilities

    device = torch.device(device)
    if device.type == "cpu":
        flags = cpu_native_bf16()
        if flags:
            return True, f"native bf16 on this CPU ({', '.join(flags)})"
        return False, "this CPU has no native bf16 (no avx512_bf16 / amx_bf16 / bf16 feature)"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available"
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        if major >= 8:
            return True, f"native bf16 on {torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
        return False, f"{torch.cuda.get_device_name(index)} (compute capability {major}.{minor}) has no native bf16"
    return False, f"native bf16 is not checked on {device.type} devices"


# --- the model directory's record ------------------------------------------------------------------------

@dataclass
class PrecisionRecord:
    """What precision.json says: for one model version, each measured precision against fp32 on the test splits.

    precisions: name -> {"status": "validated" | "refused", "blocks_changed", "decisions_changed", "posts",
    "max_abs_diff" {category: float}, ...}. tolerance: {"blocks_changed": the most blocks a precision may change
    and still be validated}. meta: where and how it was measured (command, datasets, sample, date, hardware).
    """

    model_version: str
    precisions: dict[str, dict[str, Any]]
    tolerance: dict[str, Any] = field(default_factory=lambda: {"blocks_changed": 0})
    reference: str = REFERENCE
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        """`precision-<12 hex>` of the record's content: changes whenever a figure does."""
        body = json.dumps(self._body(), sort_keys=True, ensure_ascii=False)
        return f"precision-{hashlib.sha256(body.encode('utf-8')).hexdigest()[:12]}"

    def status(self, precision: str) -> str | None:
        """"validated", "refused", or None when the precision was not measured."""
        entry = self.precisions.get(precision)
        return None if entry is None else str(entry.get("status"))

    def summary(self, precision: str) -> str:
        """One line of what was measured for `precision`, e.g. "0 blocks and 3 decisions changed on 9,400 test posts"."""
        e = self.precisions.get(precision) or {}
        twice = (f", {e['rescored_share']:.1%} of them scored twice" if isinstance(e.get("rescored_share"), (int, float))
                 else "")
        return (f"{e.get('blocks_changed', '?')} blocks and {e.get('decisions_changed', '?')} decisions changed "
                f"against {self.reference} on {e.get('posts', 0):,} test posts{twice} (tolerance "
                f"{self.tolerance.get('blocks_changed', 0)} blocks)")

    def guard_margin(self) -> dict[str, float] | None:
        """The logit margin per category of the guarded precisions (one measurement; None when the record has none)."""
        for precision in GUARDED_MODES:
            margin = (self.precisions.get(precision) or {}).get("margin_logit")
            if isinstance(margin, Mapping) and margin:
                return {str(c): float(v) for c, v in margin.items()}
        return None

    def _body(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "reference": self.reference, "tolerance": self.tolerance,
                "precisions": self.precisions, "meta": self.meta}

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, **self._body()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "PrecisionRecord":
        """Raises PrecisionError for a record without a model version or with a malformed precision entry."""
        if not isinstance(data, Mapping) or not isinstance(data.get("model_version"), str):
            raise PrecisionError("a precision record needs a string 'model_version'")
        precisions = data.get("precisions") or {}
        if not isinstance(precisions, Mapping):
            raise PrecisionError("'precisions' must map a precision to its measurement")
        for name, entry in precisions.items():
            if not isinstance(entry, Mapping) or entry.get("status") not in ("validated", "refused"):
                raise PrecisionError(f"precision {name!r}: 'status' must be 'validated' or 'refused'")
        return cls(model_version=data["model_version"], precisions={k: dict(v) for k, v in precisions.items()},
                   tolerance=dict(data.get("tolerance") or {"blocks_changed": 0}),
                   reference=str(data.get("reference", REFERENCE)), meta=dict(data.get("meta") or {}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrecisionRecord":
        """Read a precision.json. Raises PrecisionError (naming the file) when it is not a valid record."""
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_json(json.load(fh))
        except json.JSONDecodeError as exc:
            raise PrecisionError(f"{path}: not valid JSON ({exc})") from None
        except PrecisionError as exc:
            raise PrecisionError(f"{path}: {exc}") from None

    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write the record as `precision.json` into a model directory; returns its path."""
        path = Path(model_dir) / PRECISION_FILE
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


# --- the choice ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PrecisionChoice:
    """What was asked ("auto" or a precision), what runs, and why (one sentence, for start-up logs)."""

    asked: str
    chosen: str
    reason: str
    #: A caution for the operator (an explicit bf16 that the model's record refused), else None.
    warning: str | None = None

    def line(self) -> str:
        """"precision bf16 (auto: ...)", what entry points print at start-up."""
        how = "auto: " if self.asked == "auto" else "asked: "
        return f"precision {self.chosen} ({how}{self.reason})" + (f"; WARNING: {self.warning}" if self.warning else "")

    def to_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "chosen": self.chosen, "reason": self.reason, "warning": self.warning}


def check_precision(precision: str) -> str:
    """`precision` if it is one of PRECISION_MODES; raises PrecisionError naming the choices otherwise."""
    if precision not in PRECISION_MODES:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISION_MODES)}; got {precision!r}")
    return precision


def resolve_precision(asked: str, device: torch.device | str, *, model_version: str,
                      record: PrecisionRecord | None) -> PrecisionChoice:
    """The precision to run for `asked` on `device` with a model of `model_version` and its precision record.

    See the module docstring for the rule. Raises PrecisionError for an unknown precision.
    """
    check_precision(asked)
    current = record if record is not None and record.model_version == model_version else None
    if asked != "auto":
        warning = None
        if asked != REFERENCE and current is not None and current.status(asked) == "refused":
            warning = f"this model's precision record refused {asked}: {current.summary(asked)}"
        reason = "the reference precision of the thresholds" if asked == REFERENCE else "explicit"
        return PrecisionChoice(asked, asked, reason, warning)
    native, hardware = native_bf16(device)
    if not native:
        return PrecisionChoice(asked, REFERENCE, hardware)
    rerun = "python -m benchmarks.precision_agreement --record"
    if record is None:
        return PrecisionChoice(asked, REFERENCE, f"{hardware}, but bf16 is not validated for this model "
                                                 f"(no {PRECISION_FILE}; `{rerun}` measures it)")
    if current is None:
        return PrecisionChoice(asked, REFERENCE, f"{hardware}, but {PRECISION_FILE} was measured on "
                                                 f"{record.model_version}, not {model_version} (`{rerun}`)")
    status = current.status("bf16")
    if status == "validated":
        return PrecisionChoice(asked, "bf16", f"{hardware}; validated for {model_version}: {current.summary('bf16')}")
    refused = f"bf16 alone refused ({current.summary('bf16')}); " if status == "refused" else ""
    for mode, near in ((BLOCK_GUARDED, "the block thresholds"), (GUARDED, "the thresholds")):  # the cheaper first
        if current.status(mode) == "validated" and current.guard_margin() is not None:
            return PrecisionChoice(asked, mode, f"{hardware}; {refused}bf16 with fp32 re-scoring near {near} "
                                                f"validated for {model_version}: {current.summary(mode)}")
    if status == "refused":
        return PrecisionChoice(asked, REFERENCE, f"{hardware}, but this model refuses bf16: {current.summary('bf16')}")
    return PrecisionChoice(asked, REFERENCE, f"{hardware}, but {PRECISION_FILE} has no bf16 measurement (`{rerun}`)")


def guard_margins(given: Mapping[str, float] | None, record: PrecisionRecord | None, model_version: str,
                  categories: list[str]) -> dict[str, float]:
    """The logit margin per category of bf16-guarded: `given`, else the record's (of this model version).

    Raises PrecisionError when there is none, or when a category lacks a finite margin >= 0."""
    if given is None and record is not None and record.model_version == model_version:
        given = record.guard_margin()
    if given is None:
        raise PrecisionError(f"{GUARDED} needs a logit margin per category: this model's precision record has none "
                             "(`python -m benchmarks.precision_agreement --precisions bf16 bf16-guarded --record` "
                             "measures it)")
    missing = [c for c in categories if c not in given]
    bad = [c for c, v in given.items() if not (isinstance(v, (int, float)) and 0 <= v < float("inf"))]
    if missing or bad:
        raise PrecisionError(f"{GUARDED}: the margin needs a finite value >= 0 for every category "
                             f"(missing: {missing or 'none'}; bad: {bad or 'none'})")
    return {c: float(given[c]) for c in categories}
