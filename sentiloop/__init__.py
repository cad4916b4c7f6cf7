"""sentiloop: a continual-learning daemon for sentiment ensembles.

Kafka feedback -> durable refinement buffer -> live word-sentiment dictionary -> safe retrains.
Heavy libraries (torch, transformers, mlflow) are imported only by the modules that need them.
"""

from sentiloop.errors import (
    BrokerError,
    CheckpointError,
    ConfigError,
    DataError,
    InvalidEvent,
    SentiloopError,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InvalidEvent",
    "SentiloopError",
    "__version__",
]
