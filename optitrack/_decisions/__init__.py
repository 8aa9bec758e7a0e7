"""Decisions: the datafile in, the variation a user gets out; pure, sync, no I/O.

The rooms, in the order data flows through them::

    datafile.py     the datafile's models, validated on the way in
    project.py      ProjectConfig: the one index, with Optimizely's precedence
    conditions.py   audience conditions (the leaves), three-valued
    audiences.py    audience trees, compiled
    bucketing.py    MurmurHash3 bucketing and traffic allocations
    rules.py        experiments, rules, holdouts and flags compiled for the hot path
    records.py      what the engine takes and returns (UserInput, VariationDecision...)
    forced.py       forced variations set at run time
    variables.py    feature variables, typed
    experiments.py  deciding an experiment (Activate, get_variation) and a holdout
    lean.py         a flag compiled for the common decision, and walking it
    engine.py       DecisionEngine: deciding a flag, and what an impression names

Nothing here sends, awaits or notifies: the decider (``optitrack._decider``) does that
with what the engine returns.
"""

from .datafile import (
    Datafile,
    DatafileSource,
    Experiment,
    FeatureFlag,
    Holdout,
    Variation,
    parse_datafile,
)
from .engine import DecisionEngine
from .project import ProjectConfig, empty_config, load_datafile
from .records import RuleType, UserInput, UserProfile, VariationDecision

__all__ = [
    "Datafile",
    "DatafileSource",
    "DecisionEngine",
    "Experiment",
    "FeatureFlag",
    "Holdout",
    "ProjectConfig",
    "RuleType",
    "UserInput",
    "UserProfile",
    "Variation",
    "VariationDecision",
    "empty_config",
    "load_datafile",
    "parse_datafile",
]
