"""Threshold and hyperparameter search: Pareto fronts of AP against device latency per budget.

Submodules are imported where needed, so importing this package stays cheap (no Ray or torch).
"""
