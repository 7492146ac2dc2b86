"""Kaggle Digit Recognizer pipeline: data checks, CNN ensembles, submissions, Kaggle integration."""

__version__ = "0.1.0"
