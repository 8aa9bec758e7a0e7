"""Experiment results from the stored counts: rates, lifts and 95% confidence intervals.

Owns :func:`compute_results`, which turns :class:`~._store.Tables` (and, when known, a
datafile for the names and the order of variations) into the JSON-ready results that
``GET /v1/results`` answers, ``GET /`` draws and ``optitrack results`` prints.

The method (stated in ``docs/collector.md``):

- conversion rate = unique converters / visitors;
- lift of a variation over the first (the baseline) = rate / baseline rate - 1, with a
  95% interval from the delta method on the log of the ratio of two proportions:
  ``se² = (1 - p1)/(n1 p1) + (1 - p0)/(n0 p0)``, interval ``exp(log(p1/p0) ± 1.96 se) - 1``;
- revenue per visitor: the same on the ratio of two means, each mean's variance by the
  normal approximation, ``s²/n``, from each visitor's revenue.

An interval that cannot be computed (no visitors, or a zero baseline) is ``None``.

It must not touch SQL or HTTP. It imports nothing but :mod:`._store`'s types.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._store import Tables

__all__ = ["compute_results"]

_Z = 1.959963984540054  # the 97.5th percentile of the standard normal


def _ratio_ci(
    m1: float, var1: float, m0: float, var0: float
) -> tuple[float | None, list[float] | None]:
    # Lift m1/m0 - 1 and its delta-method interval on the log scale; var are of the means.
    if m0 <= 0:
        return None, None
    lift = m1 / m0 - 1
    if m1 <= 0:
        return lift, None
    se = math.sqrt(var1 / (m1 * m1) + var0 / (m0 * m0))
    centre = math.log(m1 / m0)
    return lift, [math.exp(centre - _Z * se) - 1, math.exp(centre + _Z * se) - 1]


def _names(
    datafile: Mapping[str, Any] | None,
) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    experiments: dict[str, str] = {}
    variations: dict[str, str] = {}
    order: dict[str, int] = {}
    if not datafile:
        return experiments, variations, order
    groups = [g.get("experiments", []) for g in datafile.get("groups", [])]
    for experiment in [*datafile.get("experiments", []), *(e for g in groups for e in g)]:
        experiments[str(experiment.get("id"))] = str(experiment.get("key", ""))
        for n, variation in enumerate(experiment.get("variations", [])):
            variations[str(variation.get("id"))] = str(variation.get("key", ""))
            order[str(variation.get("id"))] = n
    for rollout in datafile.get("rollouts", []):
        for experiment in rollout.get("experiments", []):
            experiments.setdefault(str(experiment.get("id")), str(experiment.get("key", "")))
            for n, variation in enumerate(experiment.get("variations", [])):
                variations.setdefault(str(variation.get("id")), str(variation.get("key", "")))
                order.setdefault(str(variation.get("id")), n)
    return experiments, variations, order


def compute_results(tables: Tables, datafile: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compute the results per experiment and variation.

    Variations are listed in the datafile's order when it is known, otherwise by variation
    id (numerically when all digits) then key; the first one is the baseline.

    Args:
        tables: The counts from the store.
        datafile: The project's datafile, for names and order; optional.

    Returns:
        ``{"experiments": [...]}``, JSON-ready (see ``docs/collector.md``).
    """
    experiment_names, variation_names, order = _names(datafile)
    experiments: dict[str, dict[str, Any]] = {}
    arms: dict[tuple[str, str], dict[str, Any]] = {}
    for experiment_id, experiment_key, variation_id, variation_key, visitors in tables.visitors:
        experiment = experiments.setdefault(
            experiment_id,
            {
                "experiment_id": experiment_id,
                "experiment_key": experiment_key or experiment_names.get(experiment_id, ""),
                "variations": [],
            },
        )
        arm: dict[str, Any] = {
            "variation_id": variation_id,
            "variation_key": variation_key or variation_names.get(variation_id, ""),
            "visitors": visitors,
            "conversions": {},
            "revenue": 0,
            "value": 0.0,
            "revenue_per_visitor": 0.0,
            "_squares": 0,
        }
        experiment["variations"].append(arm)
        arms[experiment_id, variation_id] = arm
    for experiment_id, variation_id, squares in tables.squares:
        arms[experiment_id, variation_id]["_squares"] = squares
    for experiment_id, variation_id, key, unique, total, revenue, value in tables.conversions:
        arm = arms[experiment_id, variation_id]
        arm["conversions"][key] = {
            "unique": unique,
            "total": total,
            "rate": unique / arm["visitors"],
            "revenue": revenue,
            "value": value,
        }
        arm["revenue"] += revenue
        arm["value"] += value

    def rank(arm: dict[str, Any]) -> tuple[int, int, str, str]:
        vid = arm["variation_id"]
        if vid in order:
            return (0, order[vid], "", "")
        return (1, int(vid) if vid.isdigit() else 0, vid, arm["variation_key"])

    for experiment in experiments.values():
        variations = sorted(experiment["variations"], key=rank)
        experiment["variations"] = variations
        keys = sorted({k for arm in variations for k in arm["conversions"]})
        for arm in variations:
            for key in keys:
                arm["conversions"].setdefault(
                    key, {"unique": 0, "total": 0, "rate": 0.0, "revenue": 0, "value": 0.0}
                )
            arm["conversions"] = dict(sorted(arm["conversions"].items()))
            n = arm["visitors"]
            mean = arm["revenue"] / n
            arm["revenue_per_visitor"] = mean
            # Visitors without revenue count as zeros: sum of squares over all n.
            arm["_var"] = max(arm.pop("_squares") / n - mean * mean, 0.0) / n
        base = variations[0]
        for arm in variations:
            for key, counts in arm["conversions"].items():
                if arm is base:
                    counts["lift"], counts["ci"] = None, None
                    continue
                p1, n1 = counts["rate"], arm["visitors"]
                p0, n0 = base["conversions"][key]["rate"], base["visitors"]
                lift, ci = _ratio_ci(p1, p1 * (1 - p1) / n1, p0, p0 * (1 - p0) / n0)
                counts["lift"], counts["ci"] = lift, ci
            if arm is base:
                arm["revenue_lift"], arm["revenue_ci"] = None, None
            else:
                arm["revenue_lift"], arm["revenue_ci"] = _ratio_ci(
                    arm["revenue_per_visitor"],
                    arm["_var"],
                    base["revenue_per_visitor"],
                    base["_var"],
                )
        for arm in variations:
            arm.pop("_var")
    ordered = sorted(experiments.values(), key=lambda e: (e["experiment_key"], e["experiment_id"]))
    return {"experiments": ordered}
