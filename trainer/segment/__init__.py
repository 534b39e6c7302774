"""The lesion segmenter: ``infarctwatch train --task segment`` (data -> fit -> metrics -> bundle).

Modules in the order data travels: `data` (slices, ADC maps and masks placed on the classifier's
input square, split by case), `model` (a small U-Net), `fit` (augmentation, Dice + cross-entropy),
`metrics` (ISLES'22 definitions per case), `choose` (threshold and smallest lesion on validation),
`export` (FP16 IR and the format 2 bundle), `figures`, `run` (the steps, the run folder).
"""
