"""One measurement against its anchor, repeated: medians of each and the median of the per-repeat ratios.

>>> row = Row("framework", "s", "plain dspy.Evaluate", threshold=1.05)
>>> row.add(10.2, 10.0); row.add(9.9, 10.0); row.add(10.4, 9.8)
>>> round(row.ratio, 3), row.holds
(1.02, True)
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Row:
    """One measurement against its anchor: a value per repeat for each, and how to read the ratio."""

    name: str
    unit: str
    anchor: str
    values: list[float] = field(default_factory=list)
    anchors: list[float] = field(default_factory=list)
    higher_is_better: bool = False  # throughput: the ratio should be high; times: low
    threshold: float | None = None  # the bound on the ratio, where it sets one
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, value: float, anchor: float) -> None:
        self.values.append(value)
        self.anchors.append(anchor)

    @property
    def ratios(self) -> list[float]:
        return [v / a for v, a in zip(self.values, self.anchors, strict=True) if a]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")

    @property
    def holds(self) -> bool | None:
        if self.threshold is None:
            return None
        return self.ratio >= self.threshold if self.higher_is_better else self.ratio <= self.threshold

    def summary(self) -> dict[str, Any]:
        return asdict(self) | {
            "value": statistics.median(self.values),
            "anchor_value": statistics.median(self.anchors),
            "ratio": self.ratio,
            "ratios": self.ratios,
            "holds": self.holds,
        }
