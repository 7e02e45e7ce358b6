"""Writes two of the repository's trained examples as Keras files, in Keras's own layouts:

- mnist-resnet.h5: examples/mnist-resnet (functional: Dense, BatchNormalization, Add, ReLU) as a
  legacy Keras 2 HDF5 model file (keras.saving.legacy.hdf5_format): the architecture as JSON in
  the root attribute `model_config`, weights in `model_weights/<layer>/<layer>/<param>:0` with the
  group attributes `layer_names` and `weight_names`, as `model.save("model.h5")` writes them.
- mnist-silu.keras: examples/mnist-silu (Sequential: Conv2D with swish, AveragePooling2D, Dense with
  GELU) as a Keras 3 archive: a zip with `config.json` (Keras 3 serialisation: module, class_name,
  config, build_config, `__keras_tensor__` inbound nodes), `metadata.json`, and `model.weights.h5`
  with each layer's variables in `layers/<layer>/vars/<i>`, in creation order.

Neither TensorFlow nor Keras installs on these machines (pip cannot reach its index), so the
files are written with h5py from the TensorFlow.js models, whose topology is already Keras's JSON;
the real Keras file the tests use is MLPerf Tiny's ResNet-8 in ../shared/peer. Run from the
repository root with Debian's python3-h5py and python3-numpy:
    /usr/bin/python3 examples/keras/write_keras_files.py
"""
import json
import os
import zipfile

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.dirname(os.path.abspath(__file__))


def tfjs(name):
    d = os.path.join(ROOT, 'examples', name)
    m = json.load(open(os.path.join(d, 'model.json')))
    blob = b''.join(open(os.path.join(d, p), 'rb').read() for p in m['weightsManifest'][0]['paths'])
    weights, off = {}, 0
    for w in m['weightsManifest'][0]['weights']:
        n = int(np.prod(w['shape']))
        weights[w['name']] = np.frombuffer(blob, dtype='<f4', count=n, offset=off).reshape(w['shape'])
        off += 4 * n
    return m['modelTopology'], weights


def layer_params(weights, layer):
    return [(k.split('/')[-1], v) for k, v in weights.items() if k.split('/')[0] == layer]


def write_h5(src, dst):
    topo, weights = tfjs(src)
    config = {'class_name': 'Functional' if topo['class_name'] == 'Model' else topo['class_name'], 'config': topo['config']}
    layers = config['config']['layers']
    with h5py.File(dst, 'w') as f:
        f.attrs['keras_version'] = b'2.13.1'
        f.attrs['backend'] = b'tensorflow'
        f.attrs['model_config'] = json.dumps(config).encode('utf8')
        g = f.create_group('model_weights')
        names = [l['config']['name'] if 'name' in l['config'] else l['name'] for l in layers]
        g.attrs['layer_names'] = np.array([n.encode('utf8') for n in names])
        g.attrs['backend'] = b'tensorflow'
        g.attrs['keras_version'] = b'2.13.1'
        for n in names:
            lg = g.create_group(n)
            params = layer_params(weights, n)
            lg.attrs['weight_names'] = np.array([f'{n}/{p}:0'.encode('utf8') for p, _ in params])
            for p, v in params:
                lg.create_dataset(f'{n}/{p}:0', data=v)


def write_keras(src, dst):
    topo, weights = tfjs(src)
    assert topo['class_name'] == 'Sequential'
    layers = topo['config']['layers']
    first = layers[0]['config']
    shape = first.pop('batch_input_shape')
    k3 = [{'module': 'keras.layers', 'class_name': 'InputLayer', 'registered_name': None,
           'config': {'batch_shape': shape, 'dtype': 'float32', 'sparse': False, 'name': 'input_layer'}}]
    for l in layers:
        c = dict(l['config'])
        c['dtype'] = {'module': 'keras', 'class_name': 'DTypePolicy', 'config': {'name': 'float32'}, 'registered_name': None}
        k3.append({'module': 'keras.layers', 'class_name': l['class_name'], 'config': c, 'registered_name': None})
    config = {'module': 'keras', 'class_name': 'Sequential', 'config': {'name': topo['config']['name'], 'trainable': True, 'layers': k3}, 'registered_name': None}
    tmp = dst + '.weights.h5'
    with h5py.File(tmp, 'w') as f:
        top = f.create_group('layers')
        f.create_group('vars')
        for l in layers:
            n = l['config']['name']
            v = top.create_group(n).create_group('vars')
            for i, (_, w) in enumerate(layer_params(weights, n)):
                v.create_dataset(str(i), data=w)
    with zipfile.ZipFile(dst, 'w', compression=zipfile.ZIP_STORED) as z:
        z.writestr('metadata.json', json.dumps({'keras_version': '3.5.0', 'date_saved': '2026-12-02@00:00:00'}))
        z.writestr('config.json', json.dumps(config))
        z.write(tmp, 'model.weights.h5')
    os.remove(tmp)


if __name__ == '__main__':
    write_h5('mnist-resnet', os.path.join(OUT, 'mnist-resnet.h5'))
    write_keras('mnist-silu', os.path.join(OUT, 'mnist-silu.keras'))
    print('wrote', os.path.join(OUT, 'mnist-resnet.h5'), os.path.join(OUT, 'mnist-silu.keras'))
