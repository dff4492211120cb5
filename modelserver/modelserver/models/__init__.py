"""The classifiers the server can run, behind one small interface.

- `base`: the `Classifier` the HTTP layer and batcher see (preprocess one image in a
  request thread, predict a stacked batch in the batcher's thread, the labels), and what
  every backend shares.
- `formats`: the model files the server takes and which backend modules run each.
- `registry`: picks the backend and precision the settings ask for, and loads the model.
- `keras` (TensorFlow), `litert` (TFLite through LiteRT), `openvino`: one module per
  backend, each the only importer of its runtime and imported only when chosen, so a
  missing runtime is a one-line error rather than an ImportError at start-up.
- `labels`, `cpu`: class names; the cores and instruction sets this process may use.

This package's own import pulls in nothing, so `config` can read `formats` cheaply.
"""
