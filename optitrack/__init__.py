"""optitrack: asyncio-native Optimizely Track, decisions and Events API delivery."""

from ._datafile import ProjectConfig, load_datafile
from ._exceptions import (
    ClientStateError,
    DatafileError,
    DecisionError,
    OptitrackError,
    TrackError,
)
from ._version import __version__

__all__ = [
    "ClientStateError",
    "DatafileError",
    "DecisionError",
    "OptitrackError",
    "ProjectConfig",
    "TrackError",
    "__version__",
    "load_datafile",
]
