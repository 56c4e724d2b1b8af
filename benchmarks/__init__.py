"""Reproducible performance runs that print ratios measured side by side."""
