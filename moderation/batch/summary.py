"""What a batch job did: rows read, scored and errored (they always add up), and where the results are."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BatchSummary:
    """What a batch job did. rows_read == rows_scored + rows_errored, always."""

    rows_read: int
    rows_scored: int
    rows_errored: int
    error_counts: dict[str, int]
    out: str
    errors_path: str
    engine: str = "local"
    resumed_rows: int = 0
    elapsed_s: float = 0.0
    model_version: str = ""
    thresholds_version: str | None = None
    renamed_columns: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rows_errored == 0

    @property
    def rows_per_s(self) -> float:
        done = self.rows_read - self.resumed_rows
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One line: rows read = scored + errored, errors by code, where the results are."""
        errs = ", ".join(f"{k} {v}" for k, v in sorted(self.error_counts.items()))
        resumed = f" ({self.resumed_rows} from an earlier run)" if self.resumed_rows else ""
        return (f"rows read {self.rows_read}{resumed}, scored {self.rows_scored}, errored {self.rows_errored}"
                f"{' (' + errs + ')' if errs else ''} -> {self.out}; errors -> {self.errors_path}"
                f" [{self.rows_per_s:.1f} rows/s, {self.elapsed_s:.1f} s]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

