"""Deployment export: a profile as staged ONNX / OpenVINO graphs with a torch-free runtime module."""
