"""stepsift: pick the training data worth training on, by one-step utility."""

__version__ = "0.1.0"
