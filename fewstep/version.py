"""fewstep's version (also ``fewstep.__version__``)."""
__version__ = "0.1.0"
