"""A demonstration trainer that makes vanishing and exploding gradients visible to gradtui.

``python -m trainer --depth 20 --act sigmoid`` trains a deep MLP on a synthetic MNIST-shaped
task and publishes per-layer telemetry through :class:`gradtui.probe.Monitor`.
"""
