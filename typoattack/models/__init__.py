"""Models and the zero-shot classifier: open_clip loading, device, precision, the classifier and the
encoder that returns logits (the loop over batches is in `typoattack.running.evaluate`)."""
