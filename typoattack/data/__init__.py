"""Images and labels: image sources, seeded subsets, the canvas cache and ImageNet class metadata."""
