"""The edge side of daqflow: signed bundle layout, verification, runtime and CLI.

Importing this package imports nothing else, so that `edge.bundle` and
`edge.layout` stay usable without numpy or onnxruntime.
"""
