"""optitrack: asyncio-native Optimizely Track, decisions and Events API delivery.

Everything public is importable from here; the modules behind it are private.
"""

from ._client import Client, UserContext
from ._decide import (
    DecideOption,
    Decision,
    DecisionContext,
    ForcedDecision,
    InMemoryUserProfileService,
    UserProfileService,
)
from ._decisions import ProjectConfig, load_datafile
from ._exceptions import (
    ClientStateError,
    DatafileError,
    DecisionError,
    OptitrackError,
    TrackError,
)
from ._notifications import (
    DecisionNotification,
    LogEventNotification,
    NotificationCenter,
    NotificationType,
    TrackNotification,
)
from ._processor import Overflow
from ._results import FlushResult, Reason, Statistics, TrackResult
from ._retry import RetryPolicy
from ._version import __version__

__all__ = [
    "Client",
    "ClientStateError",
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
    "OptitrackError",
    "Overflow",
    "ProjectConfig",
    "Reason",
    "RetryPolicy",
    "Statistics",
    "TrackError",
    "TrackNotification",
    "TrackResult",
    "UserContext",
    "UserProfileService",
    "__version__",
    "load_datafile",
]
