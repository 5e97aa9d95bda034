"""gatezoo benchmarks: ``python -m bench.cells`` times every cell on every exact backend against torch.nn.LSTM."""
