"""Training: config schema, train state and step, optimizer, Orbax checkpoints, metrics, the loop."""
