"""The experiments we run with the library, apart from it: step and translate timings
against the PyTorch references, memory and scaling probes, profile summaries, and the
MNIST <-> USPS results runner. They may import `configs/`; the library core imports none
of them (tests/test_layering.py holds that line)."""
