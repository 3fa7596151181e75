"""Tracking: the result store, W&B mirroring and the sweep report."""
