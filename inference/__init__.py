"""Using trained saliency models: one Predictor for any model (student SavedModel, MSI-Net, contract teachers,
ONNX/OpenVINO/LiteRT), student exports to every runtime, and the applications built on them."""
