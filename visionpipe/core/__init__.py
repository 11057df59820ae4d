"""Shared by every task: params, errors, atomic I/O, the stage runner, runtime, manifests, image
decoding and cache, augmentation, the training engine, checkpoints, plots and tables."""
