"""infarctwatch deploy: pack, sign, verify, install and roll back model bundles; set up devices.

`deploy.install.install_bundle` is the one way a bundle becomes the current model, for the
``infarctwatch deploy`` command and for the daemon's model inbox alike. Never imports TensorFlow or
OpenVINO.
"""
