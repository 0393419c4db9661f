"""HiFi-GAN vocoder training (python -m spiritlm_jax.train_vocoder): config, data, losses, step, loop."""
