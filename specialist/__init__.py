"""specialist: turn a general pre-trained language model into a specialist."""

__version__ = "0.1.0"
