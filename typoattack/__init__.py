"""typoattack: how badly are CLIP-style models fooled by words written on an image?"""

__version__ = "0.2.0"
