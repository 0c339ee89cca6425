"""Sweeps: YAML spec (spec.py) and the Optuna/MLflow runner (runner.py)."""
