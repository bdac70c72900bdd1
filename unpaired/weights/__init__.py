"""Official weight files read as data, never as code: PyTorch pickles and TensorFlow bundles.

Neither reader imports torch or TensorFlow; both return numpy arrays.
"""
