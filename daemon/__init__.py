"""infarctwatch edge runtime.

Watches an incoming folder for DWI images, runs the model bundle with OpenVINO and writes one JSON
report per scan. Also home to what the trainer shares with it: image decoding, preprocessing and the
model bundle format. Never imports TensorFlow.

Research use only, not for diagnostic use.
"""

DISCLAIMER = (
    "Research use only. Not for diagnostic use. infarctwatch is not a medical device and its "
    "output must not be used for clinical decisions."
)
GENERATOR = "infarctwatch"
"""The name infarctwatch writes as the generator of its reports and the Manufacturer of its DICOM
results (Secondary Captures, SEG, SR); a DICOM file that carries it is one of those results."""
