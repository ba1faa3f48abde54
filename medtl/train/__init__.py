"""Fine-tuning: strategies (what trains, at which rate) and regularizers against overfitting.

>>> from medtl.train import L2SP, configure_strategy
>>> callable(configure_strategy)
True
"""

from .regularizers import L2SP, class_weights
from .strategies import STRATEGIES, configure_strategy, train_mode

__all__ = ["L2SP", "class_weights", "STRATEGIES", "configure_strategy", "train_mode"]
