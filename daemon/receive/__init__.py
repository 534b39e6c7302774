"""The DICOM Storage SCP: images pushed over the network become files in the incoming folder."""
