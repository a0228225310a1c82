"""ScanAI: scanner-side AI tools (cardiac motion, parametric PET, k-space spikes, chest radiograph QC).

The library runs in plain Python; only :mod:`scanai.mrml` talks to Slicer. Importing ``scanai`` is cheap:
it never imports torch, SimpleITK or Slicer.
"""

__version__ = "0.1.0"
#: The source repository. The single source of this URL: the module help texts link to it, and CMakeLists.txt
#: (EXTENSION_HOMEPAGE / ICONURL / SCREENSHOTURLS, literal because the Extensions Index validator reads them as
#: text) and the catalog entry ScanAI.json (scm_url) must agree with it (Testing/modules/test_catalog.py).
REPOSITORY_URL = "https://github.com/scanai/SlicerScanAI"
