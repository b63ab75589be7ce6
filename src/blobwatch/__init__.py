"""blobwatch: automatic detection of new WFC3/IR blobs in CSM-monitor blob images.

The data flow is one way:

FITS -> blob image (`fits_io`) -> difference image (`difference`) -> normalized image and
subframes (`preprocess`) -> probabilities and candidates (`detect`) -> database, report and
notification (`monitor`).
"""

__version__ = "0.1.0"
