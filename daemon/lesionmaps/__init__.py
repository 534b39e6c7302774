"""Lesion maps: the segmenter's map of a slice, its files, its overlay, and a series' 3-D lesions.

In the order data travels: `slice` (a probability map on the input square to lesions on the
source pixels), `files` (where mask and overlay files go, how they are encoded and read back),
`overlay` (the pictures: one slice with its lesions outlined, a series' montage), `series` (the
3-D lesions of a series from its slices' mask files). docs/daemon.md, "Lesion maps".
"""
