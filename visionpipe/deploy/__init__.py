"""Deployment: load an exported model (ONNX, TorchScript) or a checkpoint with its metadata,
decode its outputs as model.json describes them, predict on images, and the conveyor loop.

Imports nothing of training, evaluation, plotting or the tasks: `python -m visionpipe.predict`
starts in about a second and runs where only the exported files and this folder are.
"""
