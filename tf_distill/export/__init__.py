"""Deployment: SavedModels for stock TensorFlow Serving, the stock-op check, TFLite, a serving client.

Heavy imports stay in the submodules (``savedmodel``, ``stock_ops``, ``tflite``, ``client``, ``loadtest``).
"""
