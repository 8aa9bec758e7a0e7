"""optitrack: asyncio-native Optimizely Track, decisions and Events API delivery.

Everything public is importable from here; the modules behind it are private.
"""

from ._client import Client
from ._decisions import ProjectConfig, load_datafile
from ._delivery import Overflow, RetryPolicy, SpoolFsync
from ._exceptions import (
    ClientStateError,
    DatafileError,
    DecisionError,
    OptitrackError,
    SpoolLockedError,
    TrackError,
)
from ._notifications import (
    ConfigUpdateNotification,
    DecisionNotification,
    LogEventNotification,
    NotificationCenter,
    NotificationType,
    TrackNotification,
)
from ._optimizely_config import (
    OptimizelyAttribute,
    OptimizelyAudience,
    OptimizelyConfig,
    OptimizelyEvent,
    OptimizelyExperiment,
    OptimizelyFeature,
    OptimizelyVariable,
    OptimizelyVariation,
)
from ._profiles import InMemoryUserProfileService, SyncUserProfileService, UserProfileService
from ._results import FlushResult, Reason, Statistics, TrackResult
from ._signals import run
from ._sync import SyncClient
from ._sync_user import SyncUserContext
from ._user import DecideOption, Decision, DecisionContext, ForcedDecision, UserContext
from ._version import __version__

__all__ = [
    "Client",
    "ClientStateError",
    "ConfigUpdateNotification",
    "DatafileError",
    "DecideOption",
    "Decision",
    "DecisionContext",
    "DecisionError",
    "DecisionNotification",
    "FlushResult",
    "ForcedDecision",
    "InMemoryUserProfileService",
    "LogEventNotification",
    "NotificationCenter",
    "NotificationType",
    "OptimizelyAttribute",
    "OptimizelyAudience",
    "OptimizelyConfig",
    "OptimizelyEvent",
    "OptimizelyExperiment",
    "OptimizelyFeature",
    "OptimizelyVariable",
    "OptimizelyVariation",
    "OptitrackError",
    "Overflow",
    "ProjectConfig",
    "Reason",
    "RetryPolicy",
    "SpoolFsync",
    "SpoolLockedError",
    "Statistics",
    "SyncClient",
    "SyncUserContext",
    "SyncUserProfileService",
    "TrackError",
    "TrackNotification",
    "TrackResult",
    "UserContext",
    "UserProfileService",
    "__version__",
    "load_datafile",
    "run",
]

# Public names say they are from here, not from the private module that defines them: so
# reprs, tracebacks and the API reference never show a private path.
for _name in __all__:
    _member = globals()[_name]
    if getattr(_member, "__module__", "").startswith("optitrack."):
        _member.__module__ = "optitrack"
del _name, _member
