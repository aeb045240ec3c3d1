"""Which results may be compared: same dataset, same (normalised) protocol, same test items.

Within one dataset, the most common protocol among the results (and, among those, the most common
test-item set) is the reference; the leaderboard marks the others and the significance test leaves
them out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from marble_eval.files import sha256_json
from marble_eval.results.schema import ProbeResult


@dataclass(frozen=True)
class ColumnReference:
    """The protocol and test items the results of one dataset are compared under."""

    protocol: str
    test_items: str  # items_key of the reference results
    example: ProbeResult


def items_key(result: ProbeResult) -> str:
    """Digest of what a result was scored on: its test item ids and the dataset's identity (labels, splits)."""
    return sha256_json([result.dataset.test_items_digest, result.dataset.identity])


def column_references(results: list[ProbeResult]) -> dict[str, ColumnReference]:
    """Per dataset: the most common protocol (ties: the first in key order) and, among its results,
    the most common test-item set (ties: the larger)."""
    references = {}
    for dataset in {r.dataset.name for r in results}:
        column = [r for r in results if r.dataset.name == dataset]
        counts = Counter(r.comparison_key() for r in column)
        protocol = min(counts, key=lambda key: (-counts[key], key))
        same = [r for r in column if r.comparison_key() == protocol]
        items = Counter(items_key(r) for r in same)
        size = {items_key(r): r.dataset.splits.get("test", 0) for r in same}
        test_items = min(items, key=lambda key: (-items[key], -size[key], key))  # ties: the most test items
        references[dataset] = ColumnReference(protocol, test_items, same[0])
    return references


def comparable(a: ProbeResult, b: ProbeResult) -> bool:
    """True when ``a`` and ``b`` measured the same dataset (version) under the same protocol on the same test items."""
    return (a.dataset.name == b.dataset.name and a.comparison_key() == b.comparison_key()
            and items_key(a) == items_key(b))


def protocol_differences(a: ProbeResult, b: ProbeResult) -> list[str]:
    """The protocol fields (dotted) where ``a`` differs from ``b``, model-specific parts normalised."""
    left, right = a.protocol.comparable(a.model.hidden_states), b.protocol.comparable(b.model.hidden_states)
    out = []
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out += [f"{key}.{k}" for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
        elif x != y:
            out.append(key)
    return out
