"""The program baked into the lab's model images: a tiny numpy sentiment model server."""
