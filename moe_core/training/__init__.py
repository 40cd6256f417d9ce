"""Training: data sets, the networks around MoELayer, the Trainer, snapshots of a run, and the Playground's
settings and session (UI-free)."""
