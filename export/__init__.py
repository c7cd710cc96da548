"""Taking encoders out of the zoo: safetensors and ONNX files, model cards, Hub repositories.

- `sslzoo.export.onnx`: `export_onnx`, `onnx_session`, `onnx_config` (one parity-checked ONNX file).
- `sslzoo.export.quantize`: the int8 ONNX graph for fast CPU serving, calibrated on the training images.
- `sslzoo.export.folder`: `export_folder`, the complete Hub repository folder behind `sslzoo-export`.
- `sslzoo.export.cards`, `.zoo_table`, `.curves`: model cards, the zoo table, training curves.
- `sslzoo.export.results`: `record_run` / `record_results`, the one writer of measured numbers.
- `sslzoo.export.record_build`: `record_build`, every finished entry of a zoo build (`sslzoo-train --plan`).
- `sslzoo.export.stash`: `stash`, models' fp16 weights committed to the repository's history and out of the tree.
Uploads go through `sslzoo.hub.upload_folder`, the one module that talks to the Hub.
"""

#: The weight formats `sslzoo-export --to` writes (here, so the command line lists them without
#: importing PyTorch).
FORMATS = ("safetensors", "onnx", "all")

#: Images an int8 graph is calibrated on by default (`sslzoo.export.quantize`).
CALIBRATION_SIZE = 512
