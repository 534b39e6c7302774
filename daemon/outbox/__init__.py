"""DICOM results: Secondary Captures of analysed DICOM slices in an outbox, sent to a PACS.

`capture` makes one Secondary Capture (highdicom) from a source file and its report; `writer` is
the daemon thread that makes them from the files the scan workers stage; `sender` is the thread
that sends the outbox by C-STORE (pynetdicom) with bounded retries and a dead-letter folder.
Configured under ``outputs.dicom`` (docs/daemon.md, "DICOM results and sending them to a PACS").
"""
