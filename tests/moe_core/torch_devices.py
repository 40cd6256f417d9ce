"""The torch devices this machine has: the CPU always, plus CUDA and MPS where present.

Tests parametrized over DEVICES run on the CPU in CI and again on a GPU wherever one exists.
"""

import torch

DEVICES = ["cpu"]
if torch.cuda.is_available():
    DEVICES.append("cuda")
if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
    DEVICES.append("mps")
