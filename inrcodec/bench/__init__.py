"""Rate-distortion benchmarking: our families against the classical codecs Pillow ships."""
