"""seminal: the papers that built modern ML, deep learning and RL, each reimplemented and checked."""

__version__ = "0.1.0"
