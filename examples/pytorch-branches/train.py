"""Trains the repository's branching example and exports it to ONNX, as a PyTorch user would.

A small CNN on MNIST whose middle runs two branches side by side and joins them with a
concatenation, as Inception and SqueezeNet's fire modules do; the branches have different depths:
  conv 5x5 (8) -> ReLU
  branch a: conv 3x3 (8) -> ReLU -> conv 3x3 (8) -> ReLU      branch b: conv 5x5 (8) -> ReLU
  concat (16 channels) -> avg-pool 2 -> flatten -> linear 10
Under CKKS the two branches run in parallel, so the network costs the levels of its longest path,
not the sum of its layers' (src/core/cost/seriesParallel.ts). Valid convolutions, so that the
whole-model SEAL test runs it. Input: [N, 1, 28, 28] in [0, 1]. Seeded; CPU; about a minute.

Run from the repository root, after `npm ci`, with Debian's python3-torch and python3-onnx:
    /usr/bin/python3 examples/pytorch-branches/train.py
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pytorch-cnn'))
from train import train_mnist, write_onnx  # noqa: E402  (the PyTorch example's training and export)

OUT = os.path.dirname(os.path.abspath(__file__))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 5)
        self.a1 = nn.Conv2d(8, 8, 3)
        self.a2 = nn.Conv2d(8, 8, 3)
        self.b = nn.Conv2d(8, 8, 5)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 10 * 10, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.stem(x))
        a = self.relu(self.a2(self.relu(self.a1(x))))
        b = self.relu(self.b(x))
        x = self.pool(torch.cat([a, b], 1))
        return self.fc(torch.flatten(x, 1))


def main():
    epochs, batch = 3, 128
    net, acc, _, seconds = train_mnist(Net, epochs, batch)
    write_onnx(net, OUT, 'examples/pytorch-branches/train.py', epochs, batch, acc, seconds)


if __name__ == '__main__':
    main()
