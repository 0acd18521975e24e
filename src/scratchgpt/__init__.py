"""scratchgpt: the book "Build a Large Language Model (From Scratch)" as a reproducible DVC pipeline."""

__version__ = "0.1.0"
