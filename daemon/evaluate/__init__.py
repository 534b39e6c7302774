"""``infarctwatch evaluate``: score a model on a labelled folder the way the daemon would serve it.

In the order data travels: `inputs` lists what to score (a labelled dataset or an out-of-scope
set), `scoring` runs every file through the scan workers' own code (read, decode, header rules,
preprocess, inference, report), `figures` turns the reports into metrics, `drawing` draws the
confusion matrix and the reliability diagram with Pillow, `outputs` writes the evaluation folder
and `progress` shows how far it is. Nothing here imports TensorFlow or matplotlib (checked by the
import contract ``evaluate-edge-only`` in pyproject.toml): it runs on the edge install.
"""
