"""After many runs: the sweep report, loss curves as images, and SLURM submission."""
