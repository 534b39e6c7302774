"""Lesion maps: the segmenter's map of a slice, its files and its pictures.

In the order data travels: `slice` (a probability map on the input square to lesions on the
source pixels), `files` (where mask and overlay files go, how they are encoded and read back),
`overlay` (the pictures: one slice with its lesions outlined, a series' montage). The 3-D lesions
of a series are `daemon.series.lesions`'s. docs/daemon.md, "Lesion maps".
"""
