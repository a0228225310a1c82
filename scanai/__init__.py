"""ScanAI: scanner-side AI tools (cardiac motion, parametric PET, k-space spikes, chest radiograph QC).

The library runs in plain Python; only :mod:`scanai.mrml` talks to Slicer. Importing ``scanai`` is cheap:
it never imports torch, SimpleITK or Slicer.
"""

__version__ = "0.1.0"
