"""infarctwatch trainer: synthetic DWI data, the study's CNN, OpenVINO export and model bundles.

Needs the ``[train]`` extra. Imports TensorFlow only inside the functions that train or export, so
``infarctwatch synth --help`` and the label tools stay light.
"""
