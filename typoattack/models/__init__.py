"""Models and the zero-shot classifier: open_clip loading, device, precision, the encoder loop."""
