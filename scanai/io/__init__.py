"""Readers and writers: SimpleITK images, DICOM, raw k-space, tables."""
