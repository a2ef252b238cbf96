"""The image VAE on MNIST: data, networks, a fast trainer, evaluation and a speed benchmark."""
