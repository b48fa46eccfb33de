"""Small, self-contained models: the image autoencoder and the text-to-image-embedding prior."""
